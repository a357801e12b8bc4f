package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/k8s/crdsource"
	"github.com/sigil-mesh/sigil/k8s/evictions"
	"github.com/sigil-mesh/sigil/k8s/inject"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/kubernetes/fake"
)

type fakeMetricsSource struct {
	svid    time.Time
	kinds   []ca.KindState
	version int64
	err     error
}

func (f fakeMetricsSource) serverSVIDNotAfter() time.Time   { return f.svid }
func (f fakeMetricsSource) caRotationState() []ca.KindState { return f.kinds }
func (f fakeMetricsSource) configVersion(context.Context) (int64, error) {
	return f.version, f.err
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d", rec.Code)
	}
	return rec.Body.String()
}

type fakeStream struct{ grpc.ServerStream }

// TestServerMetricsCountWhatTheServerDoes: the server's /metrics counts
// agent API calls by method and code, attestations and SVIDs by result,
// the agents holding a Sync stream, admin requests by route pattern (not
// by raw path), CA rotation checks, and reads the CA's, its own SVID's
// and the config's state at each scrape.
func TestServerMetricsCountWhatTheServerDoes(t *testing.T) {
	now := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	src := fakeMetricsSource{
		svid:    now.Add(30 * time.Minute),
		kinds:   []ca.KindState{{Kind: ca.KindRoot, NotAfter: now.Add(24 * time.Hour)}, {Kind: ca.KindIntermediate, NotAfter: now.Add(2 * time.Hour), Prepared: true}},
		version: 7,
	}
	m := newMetrics(src, func() time.Time { return now }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	call := func(method string, req, resp any, err error) {
		_, _ = m.unary(ctx, req, &grpc.UnaryServerInfo{FullMethod: "/sigil.agent.v1.Agent/" + method}, func(context.Context, any) (any, error) { return resp, err })
	}
	call("Attest", &agentv1.AttestRequest{}, &agentv1.AttestResponse{}, nil)
	call("Attest", &agentv1.AttestRequest{}, nil, status.Error(codes.PermissionDenied, "join token already used"))
	call("Attest", &agentv1.AttestRequest{}, nil, status.Error(codes.Unavailable, "store"))
	call("Attest", &agentv1.AttestRequest{K8SPsatToken: "t"}, &agentv1.AttestResponse{}, nil)
	call("Attest", &agentv1.AttestRequest{K8SPsatToken: "t"}, nil, status.Error(codes.Unavailable, "tokenreviews create: connection refused"))
	call("BatchNewX509SVID", &agentv1.BatchNewX509SVIDRequest{}, &agentv1.BatchNewX509SVIDResponse{Results: []*agentv1.X509SVIDResult{{Svid: &agentv1.X509SVID{}}, {Svid: &agentv1.X509SVID{}}, {Error: "no such entry"}}}, nil)
	call("BatchNewX509SVID", &agentv1.BatchNewX509SVIDRequest{Params: make([]*agentv1.X509SVIDParams, 4)}, nil, status.Error(codes.PermissionDenied, "agent is not registered"))
	call("NewJWTSVID", &agentv1.NewJWTSVIDRequest{}, &agentv1.NewJWTSVIDResponse{}, nil)
	call("NewJWTSVID", &agentv1.NewJWTSVIDRequest{}, nil, status.Error(codes.InvalidArgument, "audience"))

	// One Sync stream open while scraped, one ended.
	inSync, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	syncInfo := &grpc.StreamServerInfo{FullMethod: "/sigil.agent.v1.Agent/Sync", IsServerStream: true}
	go func() {
		done <- m.stream(nil, fakeStream{}, syncInfo, func(any, grpc.ServerStream) error { close(inSync); <-release; return nil })
	}()
	<-inSync
	_ = m.stream(nil, fakeStream{}, syncInfo, func(any, grpc.ServerStream) error { return nil })

	admin := m.adminMux()
	admin.HandleFunc("DELETE /v1/entries/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) })
	admin.HandleFunc("GET /v1/agents", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("[]")) })
	for _, r := range []*http.Request{
		httptest.NewRequest("DELETE", "/v1/entries/3f2a9c", nil),
		httptest.NewRequest("GET", "/v1/agents", nil),
	} {
		admin.ServeHTTP(httptest.NewRecorder(), r)
	}
	m.rotation(true, nil)
	m.rotation(false, nil)
	m.rotation(false, errors.New("kms down"))

	out := scrape(t, m.Handler())
	for _, want := range []string{
		`sigil_server_agent_api_requests_total{code="OK",method="Attest"} 2`,
		`sigil_server_agent_api_requests_total{code="PermissionDenied",method="Attest"} 1`,
		`sigil_server_agent_api_requests_total{code="OK",method="Sync"} 1`,
		`sigil_server_attestations_total{attestor="join_token",result="ok"} 1`,
		`sigil_server_attestations_total{attestor="join_token",result="refused"} 1`,
		`sigil_server_attestations_total{attestor="join_token",result="error"} 1`,
		`sigil_server_attestations_total{attestor="k8s_psat",result="ok"} 1`,
		`sigil_server_attestations_total{attestor="k8s_psat",result="error"} 1`,
		`sigil_server_svids_total{result="issued",type="x509"} 2`,
		`sigil_server_svids_total{result="refused",type="x509"} 5`,
		`sigil_server_svids_total{result="issued",type="jwt"} 1`,
		`sigil_server_svids_total{result="refused",type="jwt"} 1`,
		`sigil_server_agents_connected 1`,
		`sigil_server_admin_requests_total{code="404",method="delete",route="/v1/entries/{id}"} 1`,
		`sigil_server_admin_requests_total{code="200",method="get",route="/v1/agents"} 1`,
		`sigil_server_ca_rotation_checks_total{result="changed"} 1`,
		`sigil_server_ca_rotation_checks_total{result="failed"} 1`,
		`sigil_server_svid_expiry_seconds 1800`,
		`sigil_server_ca_expiry_seconds{kind="intermediate"} 7200`,
		`sigil_server_ca_expiry_seconds{kind="root"} 86400`,
		`sigil_server_ca_next_prepared{kind="intermediate"} 1`,
		`sigil_server_ca_next_prepared{kind="root"} 0`,
		`sigil_server_config_version 7`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(out, "3f2a9c") {
		t.Errorf("a raw admin path (with an ID) became a label")
	}
	close(release)
	<-done
	if out := scrape(t, m.Handler()); !strings.Contains(out, "sigil_server_agents_connected 0\n") {
		t.Errorf("a closed Sync stream still counts as connected")
	}

	// A store that cannot answer leaves the version out rather than
	// reporting 0.
	src.err = errors.New("database is locked")
	m = newMetrics(src, func() time.Time { return now }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if out := scrape(t, m.Handler()); strings.Contains(out, "sigil_server_config_version ") {
		t.Errorf("an unreadable config version was reported")
	}
}

// TestServerMetricsDocumented: every sigil_server_ series the registry
// gathers is in docs/metrics.md's server table, and every one the table
// lists exists.
func TestServerMetricsDocumented(t *testing.T) {
	now := time.Now()
	m := newMetrics(fakeMetricsSource{svid: now, kinds: []ca.KindState{{Kind: ca.KindRoot, NotAfter: now}}}, time.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
	// Vectors appear once they have a child.
	m.agentCalls.WithLabelValues("Attest", "OK")
	m.attestations.WithLabelValues(AttestorJoinToken, "ok")
	m.svids.WithLabelValues("x509", "issued")
	m.adminCalls.WithLabelValues("get", "/v1/agents", "200")
	m.watchWindow(fakeWindow{})
	inj, err := inject.New(inject.Config{MeshNamespace: "sigil-system"}, noNamespaces{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	m.reg.MustRegister(inj.Collector()) // as the webhook part does
	// As the configuration part does (k8s_config.go).
	m.reg.MustRegister(objectsCollector{fakeCounts{{Kind: "VirtualService", Accepted: true, Objects: 1}}})
	m.reg.MustRegister((&Server{}).leaderGauge()) // as Run does (k8s_leader.go)
	// As the agent evictions part does (k8s_evictions.go).
	m.reg.MustRegister((&Server{ha: &haState{evictions: evictions.New(fake.NewClientset(), "sigil-system", evictions.DefaultName)}}).evictionsGauge())
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "sigil_server_") {
			have = append(have, f.GetName())
		}
	}
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := documentedMetrics(t, string(doc), "## Server")
	sort.Strings(have)
	if strings.Join(have, " ") != strings.Join(documented, " ") {
		t.Fatalf("docs/metrics.md lists %v\nthe server has %v", documented, have)
	}
}

type fakeCounts []crdsource.Count

func (f fakeCounts) Counts() []crdsource.Count { return f }

// noNamespaces is an inject.NamespaceLabels that knows none.
type noNamespaces struct{}

func (noNamespaces) NamespaceLabels(context.Context, string) (map[string]string, error) {
	return nil, errors.New("no namespaces")
}

// documentedMetrics returns the metric names in the first column of the
// tables under heading (up to the next "## "), sorted.
func documentedMetrics(t *testing.T, doc, heading string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/metrics.md has no %q section", heading)
	}
	if i := strings.Index(rest, "\n## "); i >= 0 {
		rest = rest[:i]
	}
	var out []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(sigil_[a-z0-9_]+)`").FindAllStringSubmatch(rest, -1) {
		out = append(out, m[1])
	}
	sort.Strings(out)
	return out
}

// fakeWindow stands in for the golden-metrics window (telemetry/window).
type fakeWindow struct{}

func (fakeWindow) Keys() int       { return 3 }
func (fakeWindow) Dropped() uint64 { return 1 }
