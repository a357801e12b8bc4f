package proxy

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the proxy's Prometheus series; every name starts sigil_.
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	handshakes *prometheus.CounterVec
	decisions  *prometheus.CounterVec
	reloads    *prometheus.CounterVec
	tcp        *prometheus.CounterVec

	configs       *prometheus.CounterVec
	configVersion prometheus.Gauge
	overflows     *prometheus.CounterVec
	faults        *prometheus.CounterVec
	ejections     *prometheus.CounterVec
	retries       *prometheus.CounterVec
	retryBudget   *prometheus.CounterVec
	mirrors       *prometheus.CounterVec
	protocolErrs  *prometheus.CounterVec

	// series caches each request series' counter and histogram: looking
	// them up by label values hashed and UTF-8-checked five strings per
	// request, a visible share of a sidecar's CPU (bench/README.md).
	seriesMu sync.RWMutex
	series   map[seriesKey]requestSeries
}

type seriesKey struct {
	direction, source, service, protocol string
	status                               int
}

type requestSeries struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

func newMetrics(svidExpiry func() float64) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_requests_total", Help: "Requests handled, by direction, source identity, destination service, HTTP status and protocol.",
		}, []string{"direction", "source", "destination_service", "status", "protocol"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sigil_request_duration_seconds", Help: "Request latency through the proxy, to the response headers.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"direction", "destination_service", "protocol"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_tls_handshake_failures_total", Help: "mTLS handshakes that failed, by direction and reason.",
		}, []string{"direction", "reason"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_policy_decisions_total", Help: "Authorization decisions, by result (allow, deny, error).",
		}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_policy_reloads_total", Help: "Policy loads, by result (ok, refused).",
		}, []string{"result"}),
		tcp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_tcp_connections_total", Help: "Opaque TCP connections, by direction, source, destination service and result.",
		}, []string{"direction", "source", "destination_service", "result"}),
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m.configs = counter("sigil_config_updates_total", "Configurations received from the agent, by result (applied, refused).", "result")
	m.configVersion = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sigil_config_version", Help: "Version of the traffic configuration in force."})
	m.overflows = counter("sigil_upstream_overflow_total", "Requests refused with 503 because a DestinationRule connection pool was full.", "destination_service")
	m.faults = counter("sigil_faults_injected_total", "Requests aborted by fault injection.", "destination_service", "kind")
	m.ejections = counter("sigil_outlier_ejections_total", "Endpoints ejected by outlier detection.", "destination_service")
	m.retries = counter("sigil_retries_total", "Retries sent.", "destination_service")
	m.retryBudget = counter("sigil_retry_budget_exhausted_total", "Retries not sent because the retry budget was spent.", "destination_service")
	m.mirrors = counter("sigil_mirror_requests_total", "Mirrored requests, by result (sent, error, dropped, no_endpoint, skipped_body).", "destination_service", "result")
	m.protocolErrs = counter("sigil_upstream_protocol_errors_total",
		"Upstream HTTP/1.1 connections closed because the peer broke the framing, by direction (inbound: the app; outbound: a peer sidecar) and reason (malformed_response, bytes_after_response, unsolicited_bytes).",
		"direction", "reason")
	m.reg.MustRegister(m.protocolErrs)
	m.reg.MustRegister(m.configs, m.configVersion, m.overflows, m.faults, m.ejections, m.retries, m.retryBudget, m.mirrors)
	m.reg.MustRegister(m.requests, m.latency, m.handshakes, m.decisions, m.reloads, m.tcp,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_svid_expiry_seconds", Help: "Seconds until the proxy's X.509-SVID expires."}, svidExpiry),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) request(direction, source, service string, status int, protocol string, d time.Duration) {
	k := seriesKey{direction, source, service, protocol, status}
	m.seriesMu.RLock()
	s, ok := m.series[k]
	m.seriesMu.RUnlock()
	if !ok {
		s = requestSeries{
			count:   m.requests.WithLabelValues(direction, source, service, statusText(status), protocol),
			latency: m.latency.WithLabelValues(direction, service, protocol),
		}
		m.seriesMu.Lock()
		if m.series == nil || len(m.series) >= maxSeriesCache {
			m.series = map[seriesKey]requestSeries{}
		}
		m.series[k] = s
		m.seriesMu.Unlock()
	}
	s.count.Inc()
	s.latency.Observe(d.Seconds())
}

// protocolError is the h1.Client hook counting one direction's protocol
// errors; reasons are h1's few constants, so the series stay bounded.
func (m *metrics) protocolError(direction string) func(reason string) {
	return func(reason string) { m.protocolErrs.WithLabelValues(direction, reason).Inc() }
}

// maxSeriesCache bounds the cache (the series themselves live on in the
// registry); beyond it, it starts afresh.
const maxSeriesCache = 4096

func statusText(s int) string { return strconv.Itoa(s) }

// handshakeReason turns a handshake error into a short, bounded label.
func handshakeReason(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, errNotTLS) || strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "not_tls"
	case strings.Contains(msg, "didn't provide a certificate") || strings.Contains(msg, "certificate required"):
		return "no_client_certificate"
	case strings.Contains(msg, "expired") || strings.Contains(msg, "not yet valid"):
		return "expired"
	case strings.Contains(msg, "unknown authority") || strings.Contains(msg, "could not verify") || strings.Contains(msg, "bundle"):
		return "untrusted_chain"
	case strings.Contains(msg, "unexpected ID") || strings.Contains(msg, "unexpected trust domain"):
		return "unauthorized_id"
	case strings.Contains(msg, "protocol version") || strings.Contains(msg, "unsupported versions"):
		return "tls_version"
	case strings.Contains(msg, "timeout") || strings.Contains(msg, "deadline"):
		return "timeout"
	case strings.Contains(msg, "EOF") || strings.Contains(msg, "reset by peer"):
		return "closed"
	default:
		return "other"
	}
}

var errNotTLS = errors.New("proxy: not a TLS client")
