package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// TestIstioRouteSemanticsThroughSidecars applies one VirtualService with
// the real `sigil apply` and checks, through web's sidecar, what Envoy
// would do with it: a case-insensitive prefix rewrite keeps the rest of
// the path, a rewrite leaves the rest of the path as sent, a redirect
// keeps the query, and a per-try timeout is retried on another endpoint
// while the route's timeout still bounds every attempt.
func TestIstioRouteSemanticsThroughSidecars(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t,
		&backend{name: "api-slow", version: "v1", appArgs: []string{"--delay", "1s"}},
		&backend{name: "api-fast", version: "v2"})
	// The demo app's ServeMux redirects a path with "//" to a cleaned
	// one; this app reports the path exactly as it arrived.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raw := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"service": "api-raw", "path": r.URL.EscapedPath()})
	})}
	go raw.Serve(ln)
	t.Cleanup(func() { raw.Close() })
	harness.StartProxy(t, tm.ids.api, "api", ln.Addr().String(), tm.ids.policyDir, "--label", "version=v3")
	tm.waitBackends(t, "api-raw")
	// Round robin, so every other request starts on the slow endpoint.
	dr := strings.Replace(subsetsDR, "  subsets:\n", "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n  subsets:\n", 1) +
		"  - name: raw\n    labels: {version: v3}\n"
	tm.apply(t, dr+`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  http:
  - match:
    - uri: {prefix: /CaSe/}
      ignoreUriCase: true
    rewrite: {uri: /v2/}
    route:
    - destination: {host: api, subset: raw}
  - match:
    - uri: {prefix: /keep/}
    rewrite: {uri: /kept/}
    route:
    - destination: {host: api, subset: raw}
  - match:
    - uri: {prefix: /service/}
    rewrite:
      uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\2/instance/\1'}
    route:
    - destination: {host: api, subset: raw}
  - match:
    - uri: {prefix: /old}
    redirect: {uri: /new}
  - match:
    - uri: {prefix: /bounded}
    timeout: 500ms
    retries: {attempts: 10, perTryTimeout: 100ms, retryOn: gateway-error}
    route:
    - destination: {host: api, subset: v1}
  - retries: {attempts: 3, perTryTimeout: 300ms, retryOn: gateway-error}
    timeout: 5s
    route:
    - destination: {host: api}
`)
	appPath := func(path string) string {
		t.Helper()
		resp, err := tm.client.Get("http://api" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct {
			Path string `json:"path"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: status %d, %v", path, resp.StatusCode, err)
		}
		return r.Path
	}
	// The sidecar merges repeated slashes before it routes
	// (docs/security.md, request path normalization), so a rewrite never
	// sees "//"; that a rewrite touches only its own join is
	// TestIstioRouteSemanticsRewrite's.
	for path, want := range map[string]string{
		"/CASE/x/y":                "/v2/x/y",
		"/case/":                   "/v2/",
		"/keep/a//b":               "/kept/a/b",
		"/keep//a":                 "/kept/a",
		"/CaSe/a//b/c":             "/v2/a/b/c",
		"/keep/a%2Fb":              "/kept/a/b",
		"/service/foo/v1//api?x=1": "/v1/api/instance/foo",
	} {
		if got := appPath(path); got != want {
			t.Errorf("app got %q for %s, want %q (Envoy's prefix_rewrite)", got, path, want)
		}
	}

	if code, loc := tm.redirectOf(t, "http://api/old?a=1&b=2"); code != 301 || loc != "http://api/new?a=1&b=2" {
		t.Errorf("redirect: %d %q, want 301 http://api/new?a=1&b=2", code, loc)
	}

	// One endpoint in three answers after 1s: a 300ms per-try timeout
	// with gateway-error moves the request to another.
	for i := range 20 {
		r := tm.get("/", nil)
		if r.err != nil || r.status != 200 || r.service == "api-slow" || r.took > time.Second {
			t.Fatalf("request %d: status %d from %q (%v) after %s; a per-try timeout must be retried for gateway-error", i, r.status, r.service, r.err, r.took)
		}
	}
	// Only slow endpoints: 10 retries of 100ms each are cut by the
	// route's 500ms timeout.
	r := tm.get("/bounded", nil)
	if r.status != http.StatusGatewayTimeout || r.took < 400*time.Millisecond || r.took > 1500*time.Millisecond {
		t.Fatalf("bounded: status %d after %s, want 504 after about 500ms", r.status, r.took)
	}
}

// redirectOf sends a GET through web's sidecar without following a
// redirect and returns the status and Location.
func (tm *trafficMesh) redirectOf(t *testing.T, url string) (int, string) {
	t.Helper()
	noFollow := &http.Client{Transport: tm.client.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}
