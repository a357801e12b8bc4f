package server

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/naming"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// metrics are the server's own Prometheus series (docs/metrics.md,
// "Server"): what it signs, who attests, which agents are connected, the
// configuration version, the CA's rotation state and the admin API. Every
// name starts sigil_server_; labels take only bounded values (gRPC method
// names and codes, HTTP route patterns, a few results).
type metrics struct {
	reg *prometheus.Registry

	agentCalls   *prometheus.CounterVec
	attestations *prometheus.CounterVec
	svids        *prometheus.CounterVec
	connected    prometheus.Gauge
	rotations    *prometheus.CounterVec
	adminCalls   *prometheus.CounterVec
}

// metricsSource is what the scrape-time series read: the server's own
// SVID, the CA's rotation state and the stored config version.
type metricsSource interface {
	serverSVIDNotAfter() time.Time
	caRotationState() []ca.KindState
	configVersion(ctx context.Context) (int64, error)
}

// configVersionTimeout bounds the store read a scrape makes.
const configVersionTimeout = 2 * time.Second

func newMetrics(src metricsSource, now func() time.Time, log *slog.Logger) *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m := &metrics{
		reg:          prometheus.NewRegistry(),
		agentCalls:   counter("sigil_server_agent_api_requests_total", "Agent API calls (gRPC), by method and gRPC status code; a stream counts when it ends.", "method", "code"),
		attestations: counter("sigil_server_attestations_total", "Node attestations, by attestor and result (ok, refused, error).", "attestor", "result"),
		svids:        counter("sigil_server_svids_total", "Workload SVIDs asked of the server, by type (x509, jwt) and result (issued, refused).", "type", "result"),
		connected:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "sigil_server_agents_connected", Help: "Agents holding an identity stream (Sync) open."}),
		rotations:    counter("sigil_server_ca_rotation_checks_total", "CA rotation checks (every 5 s), by result (changed, unchanged, failed).", "result"),
		adminCalls:   counter("sigil_server_admin_requests_total", "Admin API requests, by HTTP method, route pattern and status code.", "method", "route", "code"),
	}
	m.reg.MustRegister(m.agentCalls, m.attestations, m.svids, m.connected, m.rotations, m.adminCalls,
		&scrapeCollector{src: src, now: now, log: log},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"changed", "unchanged", "failed"} {
		m.rotations.WithLabelValues(r)
	}
	return m
}

// windowSize is what the golden-metrics window reports of itself.
type windowSize interface {
	Keys() int
	Dropped() uint64
}

// watchWindow exports the golden-metrics window's keys held and the
// series it dropped because it was full (--stats-max-keys).
func (m *metrics) watchWindow(w windowSize) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_server_stats_keys", Help: "Keys (series) the golden-metrics window holds, at most --stats-max-keys."},
			func() float64 { return float64(w.Keys()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sigil_server_stats_dropped_total", Help: "Series of new keys the golden-metrics window dropped because it held --stats-max-keys."},
			func() float64 { return float64(w.Dropped()) }))
}

// Handler serves the registry in Prometheus's text exposition
// format, for GET /metrics.
func (m *metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// MetricsHandler serves the server's Prometheus series (GET /metrics):
// the dashboard listener mounts it (DESIGN.md: /metrics beside the
// dashboard on 127.0.0.1:8080).
func (s *Server) MetricsHandler() http.Handler { return s.metrics.Handler() }

// rotation counts one CA rotation check.
func (m *metrics) rotation(changed bool, err error) {
	switch {
	case err != nil:
		m.rotations.WithLabelValues("failed").Inc()
	case changed:
		m.rotations.WithLabelValues("changed").Inc()
	default:
		m.rotations.WithLabelValues("unchanged").Inc()
	}
}

// methodName is the last element of a gRPC full method name
// ("/sigil.agent.v1.Agent/Attest" → "Attest"). Only registered methods
// reach an interceptor, so the label's values are bounded.
func methodName(full string) string {
	return full[strings.LastIndexByte(full, '/')+1:]
}

// unary counts every unary agent API call, and the attestations and
// SVIDs the calls ask for.
func (m *metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	method, code := methodName(info.FullMethod), status.Code(err)
	m.agentCalls.WithLabelValues(method, code.String()).Inc()
	switch method {
	case "Attest":
		attestor := AttestorJoinToken
		if r, ok := req.(*agentv1.AttestRequest); ok && r.GetK8SPsatToken() != "" {
			attestor = naming.AttestorK8sPSAT
		}
		m.attestations.WithLabelValues(attestor, attestResult(code)).Inc()
	case "NewJWTSVID":
		m.svids.WithLabelValues("jwt", issuedOrRefused(err == nil)).Inc()
	case "BatchNewX509SVID":
		if b, ok := resp.(*agentv1.BatchNewX509SVIDResponse); ok && err == nil {
			var issued, refused float64
			for _, r := range b.GetResults() {
				if r.GetSvid() != nil {
					issued++
				} else {
					refused++
				}
			}
			m.svids.WithLabelValues("x509", "issued").Add(issued)
			m.svids.WithLabelValues("x509", "refused").Add(refused)
		} else if req, ok := req.(*agentv1.BatchNewX509SVIDRequest); ok {
			m.svids.WithLabelValues("x509", "refused").Add(float64(len(req.GetParams())))
		}
	}
	return resp, err
}

// stream counts streaming calls when they end, and the agents holding a
// Sync stream while it is open.
func (m *metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	method := methodName(info.FullMethod)
	if method == "Sync" {
		m.connected.Inc()
		defer m.connected.Dec()
	}
	err := handler(srv, ss)
	m.agentCalls.WithLabelValues(method, status.Code(err).String()).Inc()
	return err
}

func attestResult(c codes.Code) string {
	switch c {
	case codes.OK:
		return "ok"
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.NotFound, codes.FailedPrecondition:
		return "refused"
	default:
		return "error"
	}
}

func issuedOrRefused(ok bool) string {
	if ok {
		return "issued"
	}
	return "refused"
}

// adminMux is the admin API's ServeMux, each route counted under its
// pattern (never the raw path, which carries IDs).
type adminMux struct {
	*http.ServeMux
	calls *prometheus.CounterVec
}

// adminMux returns an empty admin API mux whose routes m counts; a nil
// m (a Server a test built by hand) counts nothing.
func (m *metrics) adminMux() adminMux {
	if m == nil {
		return adminMux{ServeMux: http.NewServeMux()}
	}
	return adminMux{ServeMux: http.NewServeMux(), calls: m.adminCalls}
}

// HandleFunc registers h for pattern ("METHOD /path"), counted.
func (a adminMux) HandleFunc(pattern string, h http.HandlerFunc) {
	if a.calls == nil {
		a.ServeMux.HandleFunc(pattern, h)
		return
	}
	route := pattern
	if _, path, ok := strings.Cut(pattern, " "); ok {
		route = path
	}
	a.ServeMux.Handle(pattern, promhttp.InstrumentHandlerCounter(a.calls.MustCurryWith(prometheus.Labels{"route": route}), h))
}

// scrapeCollector reads, at each scrape, what the server holds elsewhere.
type scrapeCollector struct {
	src metricsSource
	now func() time.Time
	log *slog.Logger
}

var (
	descSVIDExpiry = prometheus.NewDesc("sigil_server_svid_expiry_seconds",
		"Seconds until the server's own X.509-SVID (its agent API identity) expires.", nil, nil)
	descCAExpiry = prometheus.NewDesc("sigil_server_ca_expiry_seconds",
		"Seconds until the active authority of a kind (root, intermediate: the X.509 signing key, jwt: the JWT signing key) expires; negative once it has.", []string{"kind"}, nil)
	descCAPrepared = prometheus.NewDesc("sigil_server_ca_next_prepared",
		"1 when the successor of the active authority of a kind is prepared (published in the trust bundle, not yet signing), else 0.", []string{"kind"}, nil)
	descConfigVersion = prometheus.NewDesc("sigil_server_config_version",
		"Version of the stored traffic and policy configuration; it moves at every apply or delete.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSVIDExpiry
	ch <- descCAExpiry
	ch <- descCAPrepared
	ch <- descConfigVersion
}

// Collect implements prometheus.Collector. A config version the store
// cannot read is left out of the scrape (and logged), not reported as 0.
func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	if na := c.src.serverSVIDNotAfter(); !na.IsZero() {
		ch <- prometheus.MustNewConstMetric(descSVIDExpiry, prometheus.GaugeValue, na.Sub(now).Seconds())
	}
	for _, k := range c.src.caRotationState() {
		ch <- prometheus.MustNewConstMetric(descCAExpiry, prometheus.GaugeValue, k.NotAfter.Sub(now).Seconds(), string(k.Kind))
		prepared := 0.0
		if k.Prepared {
			prepared = 1
		}
		ch <- prometheus.MustNewConstMetric(descCAPrepared, prometheus.GaugeValue, prepared, string(k.Kind))
	}
	ctx, cancel := context.WithTimeout(context.Background(), configVersionTimeout)
	defer cancel()
	v, err := c.src.configVersion(ctx)
	if err != nil {
		c.log.Error("metrics: reading the config version failed", "error", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(descConfigVersion, prometheus.GaugeValue, float64(v))
}

// serverMetricsSource is the running server as a metricsSource.
type serverMetricsSource struct{ s *Server }

func (m serverMetricsSource) serverSVIDNotAfter() time.Time {
	if c := m.s.svid.Load(); c != nil && c.Leaf != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}

func (m serverMetricsSource) caRotationState() []ca.KindState { return m.s.ca.RotationState() }

func (m serverMetricsSource) configVersion(ctx context.Context) (int64, error) {
	return m.s.store.ConfigVersion(ctx)
}
