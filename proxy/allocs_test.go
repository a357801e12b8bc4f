package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/proxy/upstream"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Each request the caller's sidecar routes looks up its cluster in the
// mesh state's cache: the lookup may not allocate (it joined a string key
// per request before session 25).
func TestRequestPathAllocationsClusterLookup(t *testing.T) {
	self := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	names, err := meshNames(self, "", DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler), names: names}
	o := testOutbound(p)
	o.setState(traffic.Compile(0, nil), 1, 1, []*agentv1.Endpoint{{Service: "api", Address: "10.0.0.1:15006", SpiffeId: "spiffe://example.org/ns/default/sa/api"}})
	st := o.state.Load()
	api := naming.Service{Name: "api", Namespace: "default"}
	for _, port := range []uint32{0, 80} {
		first := o.clusterAt(st, api, "", port)
		if first == nil {
			t.Fatalf("port %d: no cluster for api", port)
		}
		if again := o.clusterAt(st, api, "", port); again != first {
			t.Fatalf("port %d: a second lookup built another cluster", port)
		}
		if n := testing.AllocsPerRun(100, func() { o.clusterAt(st, api, "", port) }); n != 0 {
			t.Errorf("port %d: %.1f allocations per cached lookup, want 0", port, n)
		}
	}
}

// Each attempt copies the request for its endpoint (outRequest), and the
// callee copies it for the app (appRequest): a copy and its URL are one
// allocation when the request keeps its own context (two before session
// 26); another context (a route or per-try timeout) adds WithContext's.
func TestRequestPathAllocationsRequestCopy(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "http://api/echo?size=1024", nil)
	ep := &upstream.Endpoint{Addr: "10.0.0.1:15006"}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	tests := []struct {
		name string
		max  float64
		copy func() *http.Request
	}{
		{"outRequest", 1, func() *http.Request { return outRequest(r.Context(), r, ep, nil, true) }},
		{"outRequest, other context", 2, func() *http.Request { return outRequest(ctx, r, ep, nil, true) }},
		{"appRequest", 1, func() *http.Request { return appRequest(r, "127.0.0.1:8080", true) }},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(100, func() { tt.copy() }); n > tt.max {
			t.Errorf("%s: %.1f allocations per copy, want at most %.0f", tt.name, n, tt.max)
		}
	}
	out := outRequest(ctx, r, ep, nil, true)
	if out.Context() != ctx || out.URL.String() != "https://10.0.0.1:15006/echo?size=1024" || out.Host != "api" || out.RequestURI != "" || r.URL.Host != "api" {
		t.Errorf("outRequest: context kept %v, URL %s, Host %q, RequestURI %q; r's URL host %q", out.Context() == ctx, out.URL, out.Host, out.RequestURI, r.URL.Host)
	}
	if out := outRequest(r.Context(), r, ep, nil, true); out.Context() != r.Context() || out == r || out.URL == r.URL {
		t.Error("outRequest with r's context: not a copy with its own URL and r's context")
	}
	app := appRequest(r, "127.0.0.1:8080", true)
	if app == r || app.URL == r.URL || app.URL.String() != "http://127.0.0.1:8080/echo?size=1024" || app.Proto != "HTTP/1.1" || r.URL.Scheme != "http" || r.URL.Host != "api" {
		t.Errorf("appRequest: URL %s, Proto %s; r's URL %s", app.URL, app.Proto, r.URL)
	}
}
