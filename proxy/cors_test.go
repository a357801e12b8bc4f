package proxy

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
)

// TestCORSPolicyAtCallerSidecar: a route's corsPolicy has the calling
// sidecar answer preflights itself (200, the policy's headers, the origin
// only when allowed) and mark the responses of allowed origins, as
// Envoy's CORS filter does; an origin not allowed gets no CORS header,
// and its preflight goes on to the destination (FORWARD) or is answered
// without one (IGNORE). The destination has no endpoint here, so a
// request that goes on is answered 503 by the sidecar.
func TestCORSPolicyAtCallerSidecar(t *testing.T) {
	rs, err := traffic.Parse([]byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
  - match: [{uri: {prefix: /ignore}}]
    route: [{destination: {host: api}}]
    corsPolicy:
      allowOrigins: [{exact: https://example.com}]
      unmatchedPreflights: IGNORE
  - match: [{uri: {prefix: /echo}}]
    route: [{destination: {host: api}}]
    corsPolicy:
      allowOrigin: ["*"]
      allowMethods: ["*"]
      allowHeaders: ["*"]
  - match: [{uri: {prefix: /plain}}]
    route: [{destination: {host: api}}]
  - route: [{destination: {host: api}}]
    corsPolicy:
      allowOrigins: [{exact: https://example.com}, {prefix: https://app.}, {regex: 'https://[a-z]+\.example\.org'}]
      allowMethods: [POST, GET]
      allowHeaders: [X-Foo-Bar, Content-Type]
      exposeHeaders: [X-Request-Id]
      maxAge: 24h
      allowCredentials: true
`), "vs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler)}
	o := testOutbound(p)
	o.setState(traffic.Compile(1, rs), 1, 1, nil)
	api := naming.Service{Name: "api", Namespace: "default"}
	preflight := map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-foo-bar"}
	with := func(m map[string]string, origin string) map[string]string {
		out := map[string]string{"Origin": origin}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	for _, tt := range []struct {
		name, method, path string
		headers            map[string]string
		status             int
		want               map[string]string // "" : absent
	}{
		{"preflight, exact origin", "OPTIONS", "/x", with(preflight, "https://example.com"), 200, map[string]string{
			"Access-Control-Allow-Origin": "https://example.com", "Access-Control-Allow-Methods": "POST,GET", "Access-Control-Allow-Headers": "X-Foo-Bar,Content-Type",
			"Access-Control-Max-Age": "86400", "Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": ""}},
		{"preflight, prefix origin", "OPTIONS", "/x", with(preflight, "https://app.example.net"), 200, map[string]string{"Access-Control-Allow-Origin": "https://app.example.net"}},
		{"preflight, regex origin", "OPTIONS", "/x", with(preflight, "https://shop.example.org"), 200, map[string]string{"Access-Control-Allow-Origin": "https://shop.example.org"}},
		{"preflight, regex is whole-value", "OPTIONS", "/x", with(preflight, "https://shop.example.org.evil.com"), 503, map[string]string{"Access-Control-Allow-Origin": ""}},
		{"preflight, origin not allowed: forwarded", "OPTIONS", "/x", with(preflight, "https://evil.com"), 503, map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": "", "Access-Control-Allow-Credentials": ""}},
		{"preflight, exact is case-sensitive", "OPTIONS", "/x", with(preflight, "https://EXAMPLE.com"), 503, map[string]string{"Access-Control-Allow-Origin": ""}},
		{"preflight, origin not allowed: IGNORE answers", "OPTIONS", "/ignore", with(preflight, "https://evil.com"), 200, map[string]string{"Access-Control-Allow-Origin": ""}},
		{"preflight, IGNORE, allowed", "OPTIONS", "/ignore", with(preflight, "https://example.com"), 200, map[string]string{"Access-Control-Allow-Origin": "https://example.com", "Access-Control-Allow-Methods": ""}},
		{"OPTIONS without Access-Control-Request-Method is not a preflight", "OPTIONS", "/x", map[string]string{"Origin": "https://example.com"}, 503, map[string]string{"Access-Control-Allow-Origin": "https://example.com"}},
		{"preflight without Origin is not one", "OPTIONS", "/x", preflight, 503, map[string]string{"Access-Control-Allow-Origin": ""}},
		{"deprecated allowOrigin *, methods and headers echoed", "OPTIONS", "/echo", with(preflight, "https://any.where"), 200, map[string]string{
			"Access-Control-Allow-Origin": "https://any.where", "Access-Control-Allow-Methods": "POST", "Access-Control-Allow-Headers": "x-foo-bar", "Access-Control-Allow-Credentials": ""}},
		{"actual request, allowed: marked (the sidecar's own 503 too)", "GET", "/x", map[string]string{"Origin": "https://example.com"}, 503, map[string]string{
			"Access-Control-Allow-Origin": "https://example.com", "Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "X-Request-Id", "Access-Control-Allow-Methods": ""}},
		{"actual request, not allowed: nothing", "GET", "/x", map[string]string{"Origin": "https://evil.com"}, 503, map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Credentials": ""}},
		{"route without corsPolicy", "OPTIONS", "/plain", with(preflight, "https://example.com"), 503, map[string]string{"Access-Control-Allow-Origin": ""}},
	} {
		r := httptest.NewRequest(tt.method, "http://api"+tt.path, nil)
		for k, v := range tt.headers {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		o.route(&statusRecorder{ResponseWriter: w}, r, api, 80)
		if w.Code != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, w.Code, tt.status)
		}
		for k, v := range tt.want {
			if got := w.Header().Get(k); got != v || (v == "" && len(w.Header().Values(k)) > 0) {
				t.Errorf("%s: %s %q, want %q", tt.name, k, got, v)
			}
		}
		if tt.status == http.StatusOK && w.Body.Len() != 0 {
			t.Errorf("%s: preflight answer has a body %q", tt.name, w.Body.String())
		}
	}
}
