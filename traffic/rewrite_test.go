package traffic

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/internal/ascii"
)

// routeFor compiles one VirtualService for api with the given http rule
// and matches a request for target against it.
func routeFor(t *testing.T, rule, target string) Matched {
	t.Helper()
	rs, err := parseRule(rule)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := Compile(1, rs).Match("api.default", httptest.NewRequest("GET", target, nil), nil)
	if !ok {
		t.Fatalf("%s does not match %s", target, rule)
	}
	return m
}

// parseRule parses a VirtualService for api with one or more http rules.
func parseRule(rule string) ([]Resource, error) {
	doc := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\nspec:\n  hosts: [api]\n  http:\n" + rule
	return Parse([]byte(doc), "test.yaml")
}

// Envoy's prefix_rewrite (what Istio's rewrite.uri becomes) replaces the
// matched prefix and keeps the rest of the path as sent; ignoreUriCase
// folds the match, never the rest.
func TestIstioRouteSemanticsRewrite(t *testing.T) {
	tests := []struct{ name, rule, target, want string }{
		{"ignoreUriCase keeps the rest", "  - match:\n    - uri: {prefix: /CaSe/}\n      ignoreUriCase: true\n    rewrite: {uri: /v2/}\n    route:\n    - destination: {host: api}\n", "http://api/CASE/x/y", "/v2/x/y"},
		{"ignoreUriCase exact", "  - match:\n    - uri: {exact: /Login}\n      ignoreUriCase: true\n    rewrite: {uri: /auth}\n    route:\n    - destination: {host: api}\n", "http://api/LOGIN", "/auth"},
		{"rest keeps its double slashes", "  - match:\n    - uri: {prefix: /v1/}\n    rewrite: {uri: /internal/}\n    route:\n    - destination: {host: api}\n", "http://api/v1/a//b///c", "/internal/a//b///c"},
		{"rewrite's own slash is not doubled", "  - match:\n    - uri: {prefix: /v1}\n    rewrite: {uri: /}\n    route:\n    - destination: {host: api}\n", "http://api/v1/users", "/users"},
		{"only the join", "  - match:\n    - uri: {prefix: /v1}\n    rewrite: {uri: /}\n    route:\n    - destination: {host: api}\n", "http://api/v1//users", "//users"},
		{"no slash at the join", "  - match:\n    - uri: {prefix: /v1/}\n    rewrite: {uri: /v2}\n    route:\n    - destination: {host: api}\n", "http://api/v1/users", "/v2users"},
		{"regex match replaces the whole path", "  - match:\n    - uri: {regex: '/v[0-9]+/.*'}\n    rewrite: {uri: /all}\n    route:\n    - destination: {host: api}\n", "http://api/v7/x", "/all"},
		{"uriRegexRewrite, Istio's example", "  - match:\n    - uri: {prefix: /service/}\n    rewrite:\n      uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}\n    route:\n    - destination: {host: api}\n", "http://api/service/foo/v1/api", "/v1/api/instance/foo"},
		{"uriRegexRewrite replaces every match", "  - rewrite:\n      uriRegexRewrite: {match: 'a+', rewrite: 'b'}\n    route:\n    - destination: {host: api}\n", "http://api/aa/xa/a?q=a", "/b/xb/b"},
		{"uriRegexRewrite: a literal dollar", "  - rewrite:\n      uriRegexRewrite: {match: '^/p/(.*)$', rewrite: '/$x/\\1'}\n    route:\n    - destination: {host: api}\n", "http://api/p/q", "/$x/q"},
		{"no uri match replaces the whole path", "  - rewrite: {uri: /fixed}\n    route:\n    - destination: {host: api}\n", "http://api/any/thing", "/fixed"},
		{"a uri without / gets one", "  - match:\n    - uri: {prefix: /api/}\n    rewrite: {uri: v1/}\n    route:\n    - destination: {host: api}\n", "http://api/api/x", "/v1/x"},
		{"a whole-path uri without / gets one", "  - rewrite: {uri: fixed}\n    route:\n    - destination: {host: api}\n", "http://api/any", "/fixed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.target, nil)
			if got := routeFor(t, tt.rule, tt.target).RewritePath(r.URL.Path); got != tt.want {
				t.Fatalf("RewritePath(%q) = %q, want %q", r.URL.Path, got, tt.want)
			}
		})
	}
}

// ignoreUriCase applies to exact and prefix only, as Istio documents: a
// regex keeps its case (it used to be matched against a lowered path, so
// a regex with a capital letter never matched at all).
func TestIstioRouteSemanticsIgnoreURICase(t *testing.T) {
	rules := "  - match:\n    - uri: {regex: /Api/.*}\n      ignoreUriCase: true\n    route:\n    - destination: {host: api, subset: regex}\n" +
		"  - match:\n    - uri: {prefix: /straße}\n      ignoreUriCase: true\n    route:\n    - destination: {host: api, subset: unicode}\n" +
		"  - route:\n    - destination: {host: api, subset: rest}\n"
	tests := []struct{ target, want string }{
		{"http://api/Api/x", "regex"},
		{"http://api/api/x", "rest"},
		{"http://api/STRAßE/x", "unicode"},
		{"http://api/STRASSE/x", "rest"},
	}
	for _, tt := range tests {
		if got := routeFor(t, rules, tt.target).Dests[0].Subset; got != tt.want {
			t.Errorf("%s went to %q, want %q", tt.target, got, tt.want)
		}
	}
}

// Istio's HTTPRedirect: uri replaces the path and keeps the query,
// authority, scheme, port and derivePort as documented.
func TestIstioRouteSemanticsRedirect(t *testing.T) {
	tests := []struct{ name, redirect, target, want string }{
		{"query kept", "{uri: /new}", "http://api/old?a=1&b=2", "http://api/new?a=1&b=2"},
		{"uri's own query wins", "{uri: '/new?x=9'}", "http://api/old?a=1", "http://api/new?x=9"},
		{"path kept without uri", "{authority: other.example}", "http://api/old/p?q=1", "http://other.example/old/p?q=1"},
		{"authority replaces host and port", "{authority: 'other:8443'}", "http://api:9000/old", "http://other:8443/old"},
		{"https drops http's default port", "{scheme: https}", "http://api:80/old", "https://api/old"},
		{"https keeps another port", "{scheme: https}", "http://api:9000/old", "https://api:9000/old"},
		{"port", "{port: 8080}", "http://api:9000/old", "http://api:8080/old"},
		{"default port left out", "{scheme: https, port: 443}", "http://api:9000/old", "https://api/old"},
		{"FROM_PROTOCOL_DEFAULT", "{scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}", "http://api:9000/old", "https://api/old"},
		{"FROM_REQUEST_PORT", "{authority: other, derivePort: FROM_REQUEST_PORT}", "http://api:9000/old", "http://other:9000/old"},
		{"IPv6 authority", "{authority: '[::1]:8080'}", "http://api/old", "http://[::1]:8080/old"},
		{"IPv6 authority, default port", "{authority: '[::1]', scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}", "http://api/old", "https://[::1]/old"},
		{"escaped path kept", "{scheme: https}", "http://api/a%20b?c=%2F", "https://api/a%20b?c=%2F"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := routeFor(t, "  - redirect: "+tt.redirect+"\n", tt.target)
			got, code, ok := m.RedirectLocation(httptest.NewRequest("GET", tt.target, nil))
			if !ok || got != tt.want || code != 301 {
				t.Fatalf("Location %q (%d), want %q (301)", got, code, tt.want)
			}
		})
	}
}

// A redirect.uri after RedirectPrefixMarker replaces only the matched
// prefix, as rewrite.uri does (Istio's %PREFIX()%, which Gateway API's
// ReplacePrefixMatch redirect becomes); without a prefix match, the path.
func TestIstioRouteSemanticsRedirectPrefix(t *testing.T) {
	for _, tt := range []struct{ match, uri, target, want string }{
		{"{prefix: /old/}", "/new/", "http://api/old/a/b?q=1", "http://api/new/a/b?q=1"},
		{"{prefix: /old/}", "/", "http://api/old/a", "http://api/a"},
		{"{exact: /old}", "/new", "http://api/old", "http://api/new"},
	} {
		m := routeFor(t, "  - match: [{uri: "+tt.match+"}]\n    redirect: {uri: '"+RedirectPrefixMarker+tt.uri+"'}\n", tt.target)
		if got, _, _ := m.RedirectLocation(httptest.NewRequest("GET", tt.target, nil)); got != tt.want {
			t.Errorf("%s %s %s: Location %q, want %q", tt.match, tt.uri, tt.target, got, tt.want)
		}
	}
	if _, err := parseRule("  - redirect: {uri: '" + RedirectPrefixMarker + "no-slash'}\n"); err == nil || !strings.Contains(err.Error(), "must start with /") {
		t.Errorf("a prefix redirect without a leading /: %v", err)
	}
}

// Values that would split a request line or a Location header, and
// field combinations Istio refuses.
func TestIstioRouteSemanticsRefusals(t *testing.T) {
	tests := []struct{ rule, want string }{
		{"  - redirect: {uri: \"/a\\r\\nSet-Cookie: x\"}\n", "spec.http[0].redirect.uri"},
		{"  - redirect: {uri: new}\n", "must start with /"},
		{"  - redirect: {authority: \"a b\"}\n", "spec.http[0].redirect.authority"},
		{"  - redirect: {port: 70000}\n", "spec.http[0].redirect.port"},
		{"  - redirect: {derivePort: SOMETIMES}\n", "spec.http[0].redirect.derivePort"},
		{"  - redirect: {port: 81, derivePort: FROM_REQUEST_PORT}\n", "port and derivePort cannot both be set"},
		{"  - redirect: {uri: /a}\n    rewrite: {uri: /b}\n", "rewrite and redirect cannot both be set"},
		{"  - rewrite: {uri: \"/a b\"}\n    route:\n    - destination: {host: api}\n", "spec.http[0].rewrite.uri"},
		{"  - rewrite: {authority: \"x\\ny\"}\n    route:\n    - destination: {host: api}\n", "spec.http[0].rewrite.authority"},
		{"  - rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}\n    route:\n    - destination: {host: api}\n", "uri and uriRegexRewrite cannot both be set"},
		{"  - rewrite: {uriRegexRewrite: {match: '(', rewrite: b}}\n    route:\n    - destination: {host: api}\n", "spec.http[0].rewrite.uriRegexRewrite.match"},
		{"  - rewrite: {uriRegexRewrite: {match: '(a)', rewrite: '/\\2'}}\n    route:\n    - destination: {host: api}\n", "refers to group \\2; the match has 1"},
		{"  - rewrite: {uriRegexRewrite: {match: 'a', rewrite: '/\\x'}}\n    route:\n    - destination: {host: api}\n", "a backslash must be followed"},
		{"  - headers: {response: {set: {x-a: \"1\\r\\nSet-Cookie: s=1\"}}}\n    route:\n    - destination: {host: api}\n", "spec.http[0].headers.response.set.x-a"},
		{"  - route:\n    - destination: {host: api}\n      headers: {request: {add: {x-b: \"a\\u0000b\"}}}\n", "spec.http[0].route[0].headers.request.add.x-b"},
	}
	for _, tt := range tests {
		_, err := parseRule(tt.rule)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err %v, want %q", tt.rule, err, tt.want)
		}
	}
}

// A per-try timeout is a 504 to Envoy: retried under 5xx, gateway-error
// and reset, and not under conditions about connections or statuses.
func TestIstioRouteSemanticsRetryOnPerTryTimeout(t *testing.T) {
	tests := []struct {
		retryOn string
		want    bool
	}{
		{"gateway-error", true},
		{"5xx", true},
		{"reset", true},
		{"connect-failure", false},
		{"refused-stream", false},
		{"retriable-4xx", false},
		{"retriable-status-codes", false},
		{DefaultRetryOn, false},
	}
	for _, tt := range tests {
		r, err := ParseRetryOn(tt.retryOn)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Failure(FailTimeout); got != tt.want {
			t.Errorf("retryOn %q: per-try timeout retried = %v, want %v", tt.retryOn, got, tt.want)
		}
	}
	if r, _ := ParseRetryOn("gateway-error"); !r.Failure(FailReset) {
		t.Error("gateway-error must retry a reset stream (Envoy answers it 503)")
	}
}

// FuzzRouteSemantics: whatever the request path, a rewrite keeps the rest
// of the path (less at most the one slash of the join) and a redirect
// never puts a line break in Location.
func FuzzRouteSemantics(f *testing.F) {
	f.Add("/CASE/x/y", "/case/", "/v2/", "a=1")
	f.Add("/v1//a", "/v1", "/", "")
	f.Add("/", "/", "/x", "q=%0d%0a")
	f.Fuzz(func(t *testing.T, path, prefix, uri, query string) {
		r := httptest.NewRequest("GET", "http://api/", nil)
		r.URL.Path, r.URL.RawQuery = path, query
		matched := ""
		if len(prefix) <= len(path) && ascii.EqualFold(path[:len(prefix)], prefix) {
			matched = path[:len(prefix)]
		}
		m := Matched{Route: &Route{Rewrite: &HTTPRewrite{URI: uri}}, PrefixMatched: matched}
		got := m.RewritePath(path)
		if uri != "" && !strings.HasPrefix(got, "/") {
			t.Fatalf("RewritePath(%q) with uri %q = %q, not a path", path, uri, got)
		}
		if uri != "" && matched != "" {
			rest := path[len(matched):]
			if !strings.HasPrefix(got, uri) && !strings.HasPrefix(got, "/"+uri) || !strings.HasSuffix(got, strings.TrimPrefix(rest, "/")) || len(got) < len(uri)+len(rest)-1 {
				t.Fatalf("RewritePath(%q) with prefix %q, uri %q = %q", path, matched, uri, got)
			}
		}
		var v validator
		v.uri("uri", uri, true, true)
		if len(v.problems) > 0 {
			return
		}
		m.Redirect = &HTTPRedirect{URI: uri, Scheme: "https"}
		loc, _, _ := m.RedirectLocation(r)
		if strings.ContainsAny(loc, "\r\n") && !strings.ContainsAny(query, "\r\n") {
			t.Fatalf("Location %q has a line break", loc)
		}
	})
}
