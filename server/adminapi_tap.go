package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/tap"
)

// auditTapStarted records each tap: who watched which service's requests,
// and how (the match, the bounds), before the first control goes out.
const auditTapStarted = "tap.started"

// tapControl is the control a GET /v1/tap query asks for, checked
// against package tap's bounds.
func tapControl(r *http.Request) (*agentv1.TapControl, error) {
	q := r.URL.Query()
	// A misspelt or repeated parameter would otherwise tap more than was
	// asked (every path, every method): refuse it.
	for k, vs := range q {
		switch k {
		case "service", "namespace", "path", "method", "max", "rate":
		default:
			return nil, adminv1.Errorf(http.StatusBadRequest, "tap: unknown query parameter %q (want service, namespace, path, method, max, rate)", k)
		}
		if len(vs) != 1 {
			return nil, adminv1.Errorf(http.StatusBadRequest, "tap: query parameter %q given %d times", k, len(vs))
		}
	}
	number := func(name string, def int) (uint32, error) {
		v := q.Get(name)
		if v == "" {
			return uint32(def), nil
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return 0, adminv1.Errorf(http.StatusBadRequest, "tap: %s %q: want a whole number", name, v)
		}
		return uint32(n), nil
	}
	maxEvents, err := number("max", tap.DefaultMaxEvents)
	if err != nil {
		return nil, err
	}
	rate, err := number("rate", tap.DefaultRate)
	if err != nil {
		return nil, err
	}
	ns := q.Get("namespace")
	if ns == "" {
		ns = "default"
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	c := &agentv1.TapControl{
		TapId: hex.EncodeToString(id[:]),
		Match: &agentv1.TapMatch{Namespace: ns, Service: q.Get("service"), PathPrefix: q.Get("path"), Method: q.Get("method")},
		Rate:  rate, MaxEvents: maxEvents, TtlMillis: tap.TTL.Milliseconds(),
	}
	if err := tap.CheckControl(c); err != nil {
		return nil, adminv1.Errorf(http.StatusBadRequest, "%v", err)
	}
	return c, nil
}

// tapAgents returns the agents whose nodes run sidecars of the tapped
// service, as they last reported them.
func (s *Server) tapAgents(r *http.Request, m *agentv1.TapMatch) ([]string, error) {
	ps, _, err := s.store.ListProxies(r.Context())
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range ps {
		if p.Service == m.GetService() && p.Namespace == m.GetNamespace() && !seen[p.AgentID] {
			seen[p.AgentID] = true
			out = append(out, p.AgentID)
		}
	}
	return out, nil
}

// tapStream serves GET /v1/tap: a live sample of a service's requests as
// JSON lines (adminv1.TapLine), until the tap's number of events is
// reached, the client goes (its connection closes) or the server stops.
// It renews the tap every tap.RenewEvery on the agents of the nodes that
// run the service's sidecars (sidecars that came since included); every
// hop drops a tap not renewed within tap.TTL. Only the admin socket's
// owner reaches this API.
func (s *Server) tapStream(w http.ResponseWriter, r *http.Request) {
	writeErr := func(err *adminv1.APIError) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(err.Status)
		_ = json.NewEncoder(w).Encode(err)
	}
	c, err := tapControl(r)
	if err != nil {
		var apiErr *adminv1.APIError
		errors.As(err, &apiErr)
		writeErr(apiErr)
		return
	}
	m := c.GetMatch()
	sess, err := s.taps.open(c, s.now)
	if err != nil {
		writeErr(adminv1.Errorf(http.StatusTooManyRequests, "%v (at most %d)", err, tap.MaxTaps))
		return
	}
	defer s.taps.close(sess)
	// No record, no tap.
	if err := s.audit.Append(audit.Event{Type: auditTapStarted, Actor: "admin", Subject: m.GetService() + "." + m.GetNamespace(), Details: map[string]string{
		"tap_id": c.GetTapId(), "path": m.GetPathPrefix(), "method": m.GetMethod(),
		"max": strconv.FormatUint(uint64(c.GetMaxEvents()), 10), "rate": strconv.FormatUint(uint64(c.GetRate()), 10),
	}}); err != nil {
		writeErr(adminv1.Errorf(http.StatusServiceUnavailable, "tap: audit: %v", err))
		return
	}
	done := s.taps.done(s.now)
	s.log.Info("tap started", "tap_id", c.GetTapId(), "service", m.GetService(), "namespace", m.GetNamespace(), "path", m.GetPathPrefix(), "method", m.GetMethod())
	defer s.log.Info("tap ended", "tap_id", c.GetTapId())
	// The admin server's ReadTimeout does not cut a tap: net/http clears
	// the read deadline once the request is read (TestTapStreamScopesAgentsAndEnds).
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	st := adminv1.TapStatus{}
	write := func(line adminv1.TapLine) bool {
		return enc.Encode(line) == nil && rc.Flush() == nil
	}
	status := func(end string) bool {
		st.Sidecars, st.Dropped, st.End = int(sess.started.Load()), sess.dropped.Load(), end
		cp := st
		return write(adminv1.TapLine{Status: &cp})
	}
	renew := func() {
		agents, err := s.tapAgents(r, m)
		if err != nil {
			s.log.Error("tap: listing sidecars failed", "tap_id", c.GetTapId(), "error", err)
			return
		}
		s.taps.renew(sess, agents)
	}
	renew()
	if !status("") {
		return
	}
	t := time.NewTicker(tap.RenewEvery)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-done:
			status("server stopping")
			return
		case <-t.C:
			renew()
		case <-sess.poke:
			if !status("") {
				return
			}
		case ev := <-sess.events:
			st.Events++
			if !write(adminv1.TapLine{Event: tapEventWire(ev)}) {
				return
			}
			if st.Events >= int(c.GetMaxEvents()) {
				status("max events reached")
				return
			}
		}
	}
}

// tapEventWire is an event as the admin API sends it.
func tapEventWire(ev *agentv1.TapEvent) *adminv1.TapEvent {
	return &adminv1.TapEvent{
		Time: time.Unix(0, ev.GetUnixNanos()).UTC(), Direction: ev.GetDirection(), Reporter: ev.GetReporter(),
		Method: ev.GetMethod(), Authority: ev.GetAuthority(), Path: ev.GetPath(), Protocol: ev.GetProtocol(),
		Status: int(ev.GetStatus()), LatencyMS: float64(ev.GetLatencyMicros()) / 1000,
		Source: ev.GetSourcePrincipal(), Destination: ev.GetDestinationPrincipal(),
		DestinationNamespace: ev.GetDestinationNamespace(), DestinationService: ev.GetDestinationService(),
		DestinationSubset: ev.GetDestinationSubset(), Route: ev.GetRoute(),
	}
}
