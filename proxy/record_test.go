package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/telemetry"
	"github.com/sigil-mesh/sigil/traffic"
)

func testMetrics() *metrics {
	return newMetrics(func() float64 { return 0 }, telemetry.NewRecorder(time.Now()))
}

// TestRoutingRecordsSubsetRouteAndFlags: the outbound routing notes on
// the request's recorder the VirtualService route's name, the subset it
// chose and Envoy's response flag for why the sidecar answered itself.
func TestRoutingRecordsSubsetRouteAndFlags(t *testing.T) {
	rs, err := traffic.Parse([]byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
  - name: teapot
    match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418}
  - name: faulty
    match: [{uri: {exact: /abort}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: api}}]
  - name: canary
    match: [{uri: {prefix: /canary}}]
    route: [{destination: {host: api, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api
  subsets: [{name: v2, labels: {version: v2}}]
`), "vs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler), metrics: testMetrics()}
	o := testOutbound(p)
	o.setState(traffic.Compile(1, rs), 1, 1, nil)
	api := naming.Service{Name: "api", Namespace: "default"}
	for _, tt := range []struct {
		path                 string
		status               int
		route, subset, flags string
	}{
		{"/teapot", 418, "teapot", "", ""},
		{"/abort", 500, "faulty", "", flagFaultAbort},
		{"/canary/x", 503, "canary", "v2", flagNoHealthy}, // v2 has no endpoint
		{"/elsewhere", 404, "", "", flagNoRoute},
	} {
		w := &statusRecorder{ResponseWriter: httptest.NewRecorder()}
		o.route(w, httptest.NewRequest("GET", "http://api"+tt.path, nil), api, 80)
		if w.status() != tt.status || w.route != tt.route || w.subset != tt.subset || w.flags != tt.flags {
			t.Errorf("%s: %d route %q subset %q flags %q; want %d %q %q %q", tt.path, w.status(), w.route, w.subset, w.flags, tt.status, tt.route, tt.subset, tt.flags)
		}
	}
}

// TestRecordLabelsInIstioNames: a record's Prometheus labels are Istio's
// standard ones: workloads from /ns/<ns>/sa/<sa> IDs, "unknown" where a
// side is not known, mutual_tls at the destination, the subset (source)
// or the sidecar's version label (destination) as destination_version.
func TestRecordLabelsInIstioNames(t *testing.T) {
	api := naming.Service{Name: "api", Namespace: "prod"}
	for _, tt := range []struct {
		name    string
		rec     requestRecord
		version string
		want    map[string]string
	}{
		{"source", requestRecord{reporter: reporterSource, source: "spiffe://td/ns/prod/sa/web", dest: "spiffe://td/ns/prod/sa/api", service: api,
			subset: "v2", route: "canary", protocol: "http", code: 503, flags: flagNoHealthy}, "v2",
			map[string]string{"reporter": "source", "source_workload": "web", "source_workload_namespace": "prod", "destination_workload": "api",
				"destination_service": "api.prod.svc.cluster.local", "destination_service_name": "api", "destination_service_namespace": "prod",
				"destination_version": "v2", "route_name": "canary", "response_code": "503", "response_flags": "UH", "connection_security_policy": "unknown", "grpc_response_status": ""}},
		{"destination, gRPC", requestRecord{reporter: reporterDestination, source: "spiffe://td/ns/prod/sa/web", dest: "spiffe://td/ns/prod/sa/api", service: api,
			protocol: "grpc", code: 200, grpcStatus: "14", flags: flagNone}, "v1",
			map[string]string{"reporter": "destination", "destination_version": "v1", "connection_security_policy": "mutual_tls", "grpc_response_status": "14", "request_protocol": "grpc"}},
		{"no peer reached, outside host", requestRecord{reporter: reporterSource, source: "spiffe://td/web", host: "example.com", protocol: "http", code: 502, flags: flagUpstreamFail}, "",
			map[string]string{"source_workload": "unknown", "source_principal": "spiffe://td/web", "destination_principal": "unknown", "destination_workload": "unknown",
				"destination_service": "example.com", "destination_service_name": "example.com", "destination_service_namespace": "unknown", "destination_version": "unknown"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fqdn := tt.rec.host
			if !tt.rec.service.IsZero() {
				fqdn = tt.rec.service.Name + "." + tt.rec.service.Namespace + ".svc.cluster.local"
			}
			values := tt.rec.labels(tt.version, fqdn, false)
			if len(values) != len(requestLabelNames) {
				t.Fatalf("%d values for %d labels", len(values), len(requestLabelNames))
			}
			for k, v := range tt.want {
				i := slices.Index(requestLabelNames, k)
				if i < 0 {
					t.Fatalf("no label %s", k)
				}
				if values[i] != v {
					t.Errorf("%s = %q, want %q", k, values[i], v)
				}
			}
		})
	}
}

// TestRecordFailureCountsLikeIstio: a request fails in golden metrics on
// a 5xx or a gRPC status other than OK.
func TestRecordFailureCountsLikeIstio(t *testing.T) {
	for _, tt := range []struct {
		code int
		grpc string
		want bool
	}{{200, "", false}, {404, "", false}, {503, "", true}, {200, "0", false}, {200, "14", true}} {
		if got := (&requestRecord{code: tt.code, grpcStatus: tt.grpc}).failed(); got != tt.want {
			t.Errorf("%d grpc %q: failed %v, want %v", tt.code, tt.grpc, got, tt.want)
		}
	}
}

// TestGRPCStatusFromHeadersOrTrailers: the gRPC status is read where the
// response put it: trailers-only headers, an announced trailer, or one
// sent after the body under http.TrailerPrefix.
func TestGRPCStatusFromHeadersOrTrailers(t *testing.T) {
	for _, tt := range []struct {
		h    http.Header
		want string
	}{
		{http.Header{"Grpc-Status": {"7"}}, "7"},
		{http.Header{http.TrailerPrefix + "Grpc-Status": {"0"}}, "0"},
		{http.Header{"Content-Type": {"application/grpc"}}, ""},
	} {
		if got := grpcStatusOfResponse(tt.h); got != tt.want {
			t.Errorf("%v: %q, want %q", tt.h, got, tt.want)
		}
	}
}

// TestRecordingARequestAllocatesNothing: once a record's series exist,
// counting a request (Prometheus and golden metrics) allocates nothing.
func TestRecordingARequestAllocatesNothing(t *testing.T) {
	m := testMetrics()
	rec := &requestRecord{reporter: reporterDestination, source: "spiffe://td/ns/prod/sa/web", dest: "spiffe://td/ns/prod/sa/api",
		service: naming.Service{Name: "api", Namespace: "prod"}, protocol: "http", code: 200, flags: flagNone}
	m.request(rec, time.Millisecond)
	if n := testing.AllocsPerRun(1000, func() { m.request(rec, 3*time.Millisecond) }); n != 0 {
		t.Errorf("%v allocations per request, want 0", n)
	}
	rep := m.stats.Swap(time.Now())
	if len(rep.Series) != 1 || rep.Series[0].Requests != 1002 {
		t.Errorf("golden metrics %v, want one series of 1002 requests", rep.Series)
	}
}

// TestStatsReportsDropWhenTheStreamIsAway: an interval's report waits for
// the Discovery stream in an outbox of one; one the stream does not take
// before the next interval is dropped and counted, never queued.
func TestStatsReportsDropWhenTheStreamIsAway(t *testing.T) {
	p := &Proxy{metrics: testMetrics()}
	cell := p.metrics.stats.Cell(telemetry.Key{Reporter: reporterSource, DestinationService: "api"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tick, out := make(chan time.Time), make(statsOutbox, 1)
	go p.statsLoop(ctx, tick, out)
	dropped := func() float64 { return counterValue(t, p.metrics.statsReports.WithLabelValues("dropped")) }
	// Each interval's outcome is awaited before the next request, which
	// would otherwise race into the interval being swapped.
	for i, done := range []func() bool{
		func() bool { return len(out) == 1 },  // no stream: the first waits
		func() bool { return dropped() == 1 }, // the next ones are dropped
		func() bool { return dropped() == 2 },
	} {
		cell.Request(time.Millisecond, false)
		tick <- time.Now()
		for deadline := time.Now().Add(5 * time.Second); !done(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("interval %d: outbox %d, dropped %v", i, len(out), dropped())
			}
		}
	}
	// A stream comes: the waiting report goes; a failing send is counted.
	var mu sync.Mutex
	sent := make(chan *proxyv1.DiscoveryRequest, 1)
	p.sendStats(ctx, out, &mu, func(r *proxyv1.DiscoveryRequest) error {
		sent <- r
		return errors.New("stream broke")
	})
	if r := <-sent; r.GetStats() == nil || len(r.GetStats().Series) != 1 {
		t.Errorf("sent %v, want one interval's report", r)
	}
	if got := dropped(); got != 3 {
		t.Errorf("dropped %v reports, want 3 (the failed send)", got)
	}
}
