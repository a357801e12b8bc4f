package agent

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sigil-mesh/sigil/agent/relay"
)

// State is where the agent's own identity stands.
type State string

// States, in the order an outage passes through them.
const (
	// StateOK: the agent SVID is valid and renews on schedule.
	StateOK State = "ok"
	// StateRenewalFailing: renewal is overdue (the server is unreachable)
	// but the agent SVID is still valid; workloads are served.
	StateRenewalFailing State = "renewal_failing"
	// StateExpired: the agent SVID expired; the server refuses its TLS
	// handshakes, so nothing can be renewed until the node re-attests.
	StateExpired State = "expired"
	// StateEvicted: the server no longer knows this agent; it serves no
	// identities until the node re-attests.
	StateEvicted State = "evicted"
)

var allStates = []State{StateOK, StateRenewalFailing, StateExpired, StateEvicted}

// loudEvery spaces out the repeated error lines of a lasting bad state.
const loudEvery = 30 * time.Second

// health tracks the agent's state, says it loudly in the log when it goes
// bad, and serves it on the admin endpoint: /metrics, /ready and /live.
type health struct {
	log    *slog.Logger
	now    func() time.Time
	expiry func() time.Time // the agent SVID's NotAfter
	// kubernetes: the node re-attests by itself with its projected token
	// (--kubernetes), not with a join token an operator writes.
	kubernetes bool

	mu          sync.Mutex
	state       State
	reason      string
	lastContact time.Time
	lastLoud    time.Time

	reg            *prometheus.Registry
	stateGauge     *prometheus.GaugeVec
	reattestations *prometheus.CounterVec
}

func newHealth(log *slog.Logger, now func() time.Time, expiry func() time.Time, kubernetes bool) *health {
	h := &health{log: log, now: now, expiry: expiry, kubernetes: kubernetes, state: StateOK, lastContact: now(), reg: prometheus.NewRegistry()}
	h.stateGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sigil_agent_state", Help: "1 for the agent's current state (ok, renewal_failing, expired, evicted), 0 for the others.",
	}, []string{"state"})
	h.reattestations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_agent_reattestations_total", Help: "Re-attestations (with a join token, or the projected token with --kubernetes) while running, by result (ok, refused, failed).",
	}, []string{"result"})
	h.reg.MustRegister(h.stateGauge, h.reattestations,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sigil_agent_svid_expiry_seconds", Help: "Seconds until the agent's own X.509-SVID expires; negative once it has.",
		}, func() float64 { return h.expiry().Sub(h.now()).Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sigil_agent_server_contact_age_seconds", Help: "Seconds since the agent last heard from the server.",
		}, func() float64 { h.mu.Lock(); defer h.mu.Unlock(); return h.now().Sub(h.lastContact).Seconds() }),
	)
	h.setGauge(StateOK)
	return h
}

func (h *health) setGauge(s State) {
	for _, st := range allStates {
		v := 0.0
		if st == s {
			v = 1
		}
		h.stateGauge.WithLabelValues(string(st)).Set(v)
	}
}

// contact records a successful exchange with the server.
func (h *health) contact() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastContact = h.now()
}

// get returns the state, why, and when the server was last heard from.
func (h *health) get() (State, string, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state, h.reason, h.lastContact
}

// set moves to state s. Bad states are logged at error level on entry and
// again every loudEvery while they last; a return to ok is logged once.
func (h *health) set(s State, reason string) {
	h.mu.Lock()
	prev := h.state
	h.state, h.reason = s, reason
	loud := s != StateOK && (s != prev || h.now().Sub(h.lastLoud) >= loudEvery)
	if loud {
		h.lastLoud = h.now()
	}
	since := h.lastContact
	h.mu.Unlock()
	h.setGauge(s)
	switch {
	case s == StateOK && prev != StateOK:
		h.log.Info("agent identity healthy again", "previous_state", string(prev), "not_after", h.expiry())
	case loud && s == StateRenewalFailing && h.kubernetes:
		h.log.Warn("agent svid renewal overdue: the server has been unreachable since the renewal at half-life was due; if the agent svid expires before the server is back, the node re-attests with its projected token (--k8s-psat-token-file) once it is",
			"state", string(s), "reason", reason, "not_after", h.expiry(), "server_unreachable_since", since)
	case loud && s != StateRenewalFailing && h.kubernetes:
		h.log.Error("agent cannot renew its identity: "+reason+"; workloads on this node get no new SVIDs until the node re-attests, which it does by itself with its projected token (--k8s-psat-token-file) once the server accepts it: see the server's agent.refused audit records and log for why it does not",
			"state", string(s), "not_after", h.expiry(), "server_unreachable_since", since)
	case loud && s == StateRenewalFailing:
		h.log.Warn("agent svid renewal overdue: the server has been unreachable since the renewal at half-life was due; if the agent svid expires before the server is back, this node needs a new join token (--join-token-file)",
			"state", string(s), "reason", reason, "not_after", h.expiry(), "server_unreachable_since", since)
	case loud:
		h.log.Error("agent cannot renew its identity: "+reason+"; workloads on this node get no new SVIDs until the node re-attests. To recover, write a new join token (sigil-server token generate --node NODE --output FILE) to the agent's --join-token-file, or restart the agent with a new token",
			"state", string(s), "not_after", h.expiry(), "server_unreachable_since", since)
	}
}

// handler serves /metrics, /ready (503 with the reason unless the agent
// SVID is valid and accepted) and /live.
func (h *health) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		s, reason, _ := h.get()
		if s == StateExpired || s == StateEvicted {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s: %s\n", s, reason)
			return
		}
		fmt.Fprintf(w, "ready: %s\n", s)
	})
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "live\n") })
	return mux
}

// countStats publishes what became of the node's golden metrics (the
// relay's counts) as counters.
func (h *health) countStats(counts func() relay.StatsCounts) {
	// byResult is a counter per result, each read from counts.
	byResult := func(name, help string, sent, dropped func(relay.StatsCounts) uint64) []prometheus.Collector {
		var out []prometheus.Collector
		for result, get := range map[string]func(relay.StatsCounts) uint64{"sent": sent, "dropped": dropped} {
			out = append(out, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"result": result}},
				func() float64 { return float64(get(counts())) }))
		}
		return out
	}
	h.reg.MustRegister(byResult("sigil_agent_stats_reports_total", "Intervals of the node's golden metrics reported to the server, by result (sent, dropped).",
		func(c relay.StatsCounts) uint64 { return c.Sent }, func(c relay.StatsCounts) uint64 { return c.Dropped })...)
	h.reg.MustRegister(byResult("sigil_agent_stats_requests_total", "Requests counted in the node's golden metrics, by what became of their interval (sent to the server, dropped).",
		func(c relay.StatsCounts) uint64 { return c.RequestsSent }, func(c relay.StatsCounts) uint64 { return c.RequestsDropped })...)
	h.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sigil_agent_stats_refused_total", Help: "Series and denials from the node's sidecars refused: about another identity than the sidecar's own, or out of bounds.",
	}, func() float64 { return float64(counts().Refused) }))
}
