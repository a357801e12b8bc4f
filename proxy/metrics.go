package proxy

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/protocol"
	"github.com/sigil-mesh/sigil/proxy/h2conn"
	"github.com/sigil-mesh/sigil/telemetry"
)

// metrics are the proxy's Prometheus series; every name starts sigil_.
// The request and TCP series are Istio's standard metrics under Sigil's
// prefix (docs/metrics.md, "Sidecar request metrics").
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	handshakes *prometheus.CounterVec
	decisions  *prometheus.CounterVec
	reloads    *prometheus.CounterVec
	dryRun     *prometheus.CounterVec // sigil_policy_dryrun_decisions_total

	tcpOpened, tcpClosed, tcpSent, tcpReceived *prometheus.CounterVec

	configs       *prometheus.CounterVec
	configVersion prometheus.Gauge
	overflows     *prometheus.CounterVec
	faults        *prometheus.CounterVec
	ejections     *prometheus.CounterVec
	retries       *prometheus.CounterVec
	retryBudget   *prometheus.CounterVec
	unprocessed   *prometheus.CounterVec
	mirrors       *prometheus.CounterVec
	protocolErrs  *prometheus.CounterVec

	// stats counts the golden metrics the sidecar reports to its agent
	// (stats.go); statsOverflow and statsReports count what it could not
	// key and the reports it sent or dropped.
	stats         *telemetry.Recorder
	statsOverflow prometheus.Counter
	statsReports  *prometheus.CounterVec

	// version is this sidecar's destination_version at the destination
	// (its "version" label); fqdn names a service's host in labels.
	version string
	fqdn    func(naming.Service) string

	// series caches each record's Prometheus series and golden-metrics
	// cell: looking series up by label values hashed and UTF-8-checked
	// every label per request, a visible share of a sidecar's CPU
	// (bench/README.md).
	seriesMu sync.RWMutex
	series   map[requestRecord]*requestSeries
}

// requestSeries is what one record counts in: its Prometheus series (the
// request ones, or the TCP ones for protocol tcp) and its golden-metrics
// cell (nil when the recorder was full), valid while the recorder's
// generation is gen.
type requestSeries struct {
	count   prometheus.Counter
	latency prometheus.Observer

	opened, closed, sent, received prometheus.Counter

	cell *telemetry.Cell
	gen  uint64
}

// istioDurationBuckets are Istio's default buckets of
// istio_request_duration_milliseconds, so its dashboards' quantiles read
// the same.
var istioDurationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

func newMetrics(svidExpiry func() float64, stats *telemetry.Recorder) *metrics {
	m := &metrics{
		reg:   prometheus.NewRegistry(),
		stats: stats,
		fqdn:  func(s naming.Service) string { return s.String() },
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_requests_total", Help: "Requests handled, Istio's istio_requests_total: by reporter, source and destination workload and identity, destination service and subset, protocol, response code, gRPC status, response flags and route.",
		}, requestLabelNames),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sigil_request_duration_milliseconds", Help: "Request latency through the sidecar to the response headers, in milliseconds (Istio's istio_request_duration_milliseconds).",
			Buckets: istioDurationBuckets,
		}, requestLabelNames),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_tls_handshake_failures_total", Help: "mTLS handshakes that failed, by direction and reason.",
		}, []string{"direction", "reason"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_policy_decisions_total", Help: "Authorization decisions, by result (allow, deny, error).",
		}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sigil_policy_reloads_total", Help: "Policy loads, by result (ok, refused).",
		}, []string{"result"}),
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m.tcpOpened = counter("sigil_tcp_connections_opened_total", "Opaque TCP connections opened (Istio's istio_tcp_connections_opened_total).", tcpLabelNames...)
	m.tcpClosed = counter("sigil_tcp_connections_closed_total", "Opaque TCP connections closed (Istio's istio_tcp_connections_closed_total).", tcpLabelNames...)
	m.tcpSent = counter("sigil_tcp_sent_bytes_total", "Bytes sent towards the caller on opaque TCP connections, counted when they close (Istio's istio_tcp_sent_bytes_total).", tcpLabelNames...)
	m.tcpReceived = counter("sigil_tcp_received_bytes_total", "Bytes received from the caller on opaque TCP connections, counted when they close (Istio's istio_tcp_received_bytes_total).", tcpLabelNames...)
	m.statsOverflow = prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_stats_overflow_total",
		Help: "Requests and TCP connections left out of the golden metrics reported to the agent because the sidecar already counted telemetry.MaxKeys keys."})
	m.statsReports = counter("sigil_stats_reports_total", "Golden-metrics reports of one interval, by result (sent to the agent; dropped: no stream to the agent, or it failed).", "result")
	m.configs = counter("sigil_config_updates_total", "Configurations received from the agent, by result (applied, refused).", "result")
	m.configVersion = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sigil_config_version", Help: "Version of the traffic configuration in force."})
	m.overflows = counter("sigil_upstream_overflow_total", "Requests refused with 503 because a DestinationRule connection pool was full.", "destination_service")
	m.faults = counter("sigil_faults_injected_total", "Requests aborted by fault injection.", "destination_service", "kind")
	m.ejections = counter("sigil_outlier_ejections_total", "Endpoints ejected by outlier detection.", "destination_service")
	m.retries = counter("sigil_retries_total", "Retries sent.", "destination_service")
	m.retryBudget = counter("sigil_retry_budget_exhausted_total", "Retries not sent because the retry budget was spent.", "destination_service")
	m.mirrors = counter("sigil_mirror_requests_total", "Mirrored requests, by result (sent, error, dropped, no_endpoint, no_rule: a host outside the mesh no DestinationRule says how to reach, skipped_body).", "destination_service", "result")
	m.protocolErrs = counter("sigil_upstream_protocol_errors_total",
		"Upstream HTTP/1.1 connections closed because the peer broke the framing, by direction (inbound: the app; outbound: a peer sidecar) and reason (malformed_response, bytes_after_response, unsolicited_bytes).",
		"direction", "reason")
	m.reg.MustRegister(m.protocolErrs)
	m.unprocessed = counter("sigil_upstream_unprocessed_retries_total",
		"Requests to a peer sidecar sent again on another connection because the peer never processed them, whatever the route's retry policy, by protocol (http2, http1) and reason (refused: REFUSED_STREAM or above a GOAWAY; not_sent: the connection ended before the request was written; closed_idle: a kept HTTP/1.1 connection the peer closed before answering an idempotent request).",
		"protocol", "reason")
	m.reg.MustRegister(m.unprocessed)
	m.dryRun = dryRunCounter()
	m.reg.MustRegister(m.dryRun)
	m.reg.MustRegister(m.configs, m.configVersion, m.overflows, m.faults, m.ejections, m.retries, m.retryBudget, m.mirrors)
	m.reg.MustRegister(m.tcpOpened, m.tcpClosed, m.tcpSent, m.tcpReceived, m.statsOverflow, m.statsReports)
	m.reg.MustRegister(m.requests, m.latency, m.handshakes, m.decisions, m.reloads,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_svid_expiry_seconds", Help: "Seconds until the proxy's X.509-SVID expires."}, svidExpiry),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// seriesOf returns rec's series, from the cache or made and cached.
func (m *metrics) seriesOf(rec *requestRecord) *requestSeries {
	gen := m.stats.Gen()
	m.seriesMu.RLock()
	s := m.series[*rec]
	m.seriesMu.RUnlock()
	if s != nil && s.gen == gen {
		return s
	}
	s = m.newSeries(rec, gen)
	m.seriesMu.Lock()
	if m.series == nil || len(m.series) >= maxSeriesCache {
		m.series = map[requestRecord]*requestSeries{}
	}
	m.series[*rec] = s
	m.seriesMu.Unlock()
	return s
}

func (m *metrics) newSeries(rec *requestRecord, gen uint64) *requestSeries {
	version, fqdn := rec.subset, rec.host
	if rec.reporter == reporterDestination {
		version = m.version
	}
	if !rec.service.IsZero() {
		fqdn = m.fqdn(rec.service)
	}
	s := &requestSeries{gen: gen, cell: m.stats.Cell(rec.statsKey())}
	if rec.protocol == protocol.TCP {
		l := rec.labels(version, fqdn, true)
		s.opened, s.closed = m.tcpOpened.WithLabelValues(l...), m.tcpClosed.WithLabelValues(l...)
		s.sent, s.received = m.tcpSent.WithLabelValues(l...), m.tcpReceived.WithLabelValues(l...)
		return s
	}
	l := rec.labels(version, fqdn, false)
	s.count, s.latency = m.requests.WithLabelValues(l...), m.latency.WithLabelValues(l...)
	return s
}

// request counts one finished request that took d.
func (m *metrics) request(rec *requestRecord, d time.Duration) {
	s := m.seriesOf(rec)
	s.count.Inc()
	s.latency.Observe(durationMillis(d))
	if c := m.cellOf(s); c != nil {
		c.Request(d, rec.failed())
		if rec.dryRunDenied {
			c.DryRunDenied()
		}
	}
}

// cellOf is s's golden-metrics cell, or nil (counted as an overflow) when
// the recorder held its most keys as s was made.
func (m *metrics) cellOf(s *requestSeries) *telemetry.Cell {
	if s.cell == nil {
		m.stats.Overflow()
		m.statsOverflow.Inc()
	}
	return s.cell
}

// tcpOpened counts an opaque TCP connection opened.
func (m *metrics) tcpOpen(rec *requestRecord) {
	s := m.seriesOf(rec)
	s.opened.Inc()
	if c := m.cellOf(s); c != nil {
		c.Opened()
		if rec.dryRunDenied {
			c.DryRunDenied()
		}
	}
}

// tcpClose counts an opaque TCP connection closed with its bytes: sent
// towards the caller, received from it.
func (m *metrics) tcpClose(rec *requestRecord, sent, received int64) {
	s := m.seriesOf(rec)
	s.closed.Inc()
	s.sent.Add(float64(sent))
	s.received.Add(float64(received))
	if s.cell != nil {
		s.cell.Closed(uint64(sent), uint64(received))
	}
}

// protocolError is the h1.Client hook counting one direction's protocol
// errors; reasons are h1's few constants, so the series stay bounded.
func (m *metrics) protocolError(direction string) func(reason string) {
	return func(reason string) { m.protocolErrs.WithLabelValues(direction, reason).Inc() }
}

// maxSeriesCache bounds the cache (the series themselves live on in the
// registry); beyond it, it starts afresh.
const maxSeriesCache = 4096

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

// h2Retried counts a request h2conn sends again because the peer never
// processed it (h2conn.IsUnprocessed).
func (m *metrics) h2Retried(err error) {
	reason := "not_sent"
	if errors.Is(err, h2conn.ErrRefused) {
		reason = "refused"
	}
	m.unprocessed.WithLabelValues("http2", reason).Inc()
}

// h1Retried counts a request the HTTP/1.1 pool sends again on a new
// connection (h1.Client.Retried).
func (m *metrics) h1Retried(reason string) {
	m.unprocessed.WithLabelValues("http1", reason).Inc()
}
