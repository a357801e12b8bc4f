package proxy

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/pathnorm"
	"github.com/sigil-mesh/sigil/traffic"
)

// After normalization a request's URL sends exactly the normalized target,
// whichever writer forwards it (URL.RequestURI is what net/http's HTTP/1
// and HTTP/2 clients send).
func TestPathNormalizationRewritesRequest(t *testing.T) {
	for _, tc := range []struct {
		mode        pathnorm.EscapedSlashes
		target, uri string
	}{
		{pathnorm.Decode, "/%61dmin?x=%2e", "/admin?x=%2e"},
		{pathnorm.Decode, "/public/..%2Fadmin", "/admin"},
		{pathnorm.Keep, "/a/..%2fb", "/a/..%2Fb"},
		{pathnorm.Decode, "/a%20b/./c!*()'", "/a%20b/c!*()'"},
		{pathnorm.Decode, "/caf\xc3\xa9", "/caf%C3%A9"},
		{pathnorm.Decode, "http://api/x/../y?q", "/y?q"},
		{pathnorm.Decode, "/plain?x=1", "/plain?x=1"},
	} {
		p := &Proxy{cfg: &checked{paths: pathnorm.Options{EscapedSlashes: tc.mode}}}
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + tc.target + " HTTP/1.1\r\nHost: api\r\n\r\n")))
		if err != nil {
			t.Fatalf("%q: %v", tc.target, err)
		}
		host := r.URL.Host
		got, err := p.normalizeTarget(r)
		if err != nil {
			t.Fatalf("%q: %v", tc.target, err)
		}
		// VirtualService uri matches read URL.Path: the normalized path,
		// decoded.
		if want, _ := url.PathUnescape(got.Path); r.URL.Path != want {
			t.Errorf("%q: URL.Path %q, want %q", tc.target, r.URL.Path, want)
		}
		if got.URI() != tc.uri || r.RequestURI != tc.uri || r.URL.RequestURI() != tc.uri || r.URL.Host != host {
			t.Errorf("%q: target %q, RequestURI %q, URL sends %q (host %q); want %q", tc.target, got.URI(), r.RequestURI, r.URL.RequestURI(), r.URL.Host, tc.uri)
		}
	}
	p := &Proxy{cfg: &checked{}}
	r, _ := http.NewRequest("GET", "http://api/x", nil)
	r.RequestURI = "/admin%00"
	if _, err := p.normalizeTarget(r); err == nil {
		t.Fatal("an encoded NUL was accepted")
	}
}

func TestPathWithEscapedSlashesFlag(t *testing.T) {
	base := Config{Socket: "s", Service: "api", App: "127.0.0.1:1", Inbound: ":1", Outbound: ":2", Admin: ":3", Policy: "p", IdleTimeout: time.Minute}
	for in, want := range map[string]pathnorm.EscapedSlashes{"": pathnorm.Decode, "decode": pathnorm.Decode, "keep": pathnorm.Keep, "reject": pathnorm.Reject, "REJECT_REQUEST": pathnorm.Reject} {
		c := base
		c.PathWithEscapedSlashes = in
		got, err := c.Validate()
		if err != nil || got.paths.EscapedSlashes != want {
			t.Errorf("%q: %v, %v", in, got, err)
		}
	}
	c := base
	c.PathWithEscapedSlashes = "unescape"
	if _, err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--path-with-escaped-slashes") {
		t.Errorf("bad value accepted or unnamed: %v", err)
	}
}

// A prefix rewrite can splice "../" into the path it builds ("/api../x"
// under prefix /api rewritten to /v1/ is /v1/../x); the result is
// normalized again, so what leaves the sidecar is the path the peer's
// policy and app act on, never a dot-segment one of them resolves.
func TestPathNormalizationAfterRewrite(t *testing.T) {
	rs, err := traffic.Parse([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: [api]\n  http:\n  - match:\n    - uri: {prefix: /api}\n    rewrite: {uri: /v1/}\n    route:\n    - destination: {host: api}\n"), "vs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	table := traffic.Compile(1, rs)
	o := &outbound{p: &Proxy{cfg: &checked{}}}
	for target, want := range map[string]string{
		"/api../admin": "/admin",
		"/api/x/y":     "/v1/x/y",
		"/api%2e%2e/x": "/x",
		"/api//x":      "/v1/x",
	} {
		r := httptest.NewRequest(http.MethodGet, "http://api"+target, nil)
		if _, err := o.p.normalizeTarget(r); err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		m, ok := table.Match("api.default", r, nil)
		if !ok {
			t.Fatalf("%s: no route", target)
		}
		if err := o.rewrite(r, m); err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if got := r.URL.EscapedPath(); got != want {
			t.Errorf("%s rewritten to %q, want %q", target, got, want)
		}
	}
}
