package traffic

import (
	"testing"
)

// TestL4MatchGateways: a tcp or tls match that names gateways applies at
// sidecars only when it names mesh (then sourceLabels do not apply, as
// for http matches); a route whose matches are all for gateways never
// matches at a sidecar, and never becomes its catch-all.
func TestL4MatchGateways(t *testing.T) {
	doc := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 27017, gateways: [istio-system/egress]}]
    route: [{destination: {host: gw-only}}]
  - match: [{port: 27017, gateways: [mesh, egress], sourceLabels: {app: nobody}}]
    route: [{destination: {host: mesh-route}}]
  - route: [{destination: {host: fallback}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  tls:
  - match: [{sniHosts: [web], gateways: [egress]}]
    route: [{destination: {host: gw-only}}]
  - match: [{sniHosts: [web], gateways: [mesh], sourceLabels: {app: nobody}, port: 443}]
    route: [{destination: {host: mesh-route}}]
  tcp:
  - match: [{gateways: [egress]}]
    route: [{destination: {host: gw-only}}]
`
	rs, err := Parse([]byte(doc), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tab := Compile(1, rs)
	tests := []struct {
		name string
		got  func() (*Route, bool)
		want string // "" for no route
	}{
		{"tcp: mesh match, labels ignored", func() (*Route, bool) { return tab.MatchTCP("db.default", 27017, map[string]string{"app": "web"}) }, "mesh-route"},
		{"tcp: other port, fallback", func() (*Route, bool) { return tab.MatchTCP("db.default", 80, nil) }, "fallback"},
		{"tcp: gateway-only route is no catch-all", func() (*Route, bool) { return tab.MatchTCP("web.default", 80, nil) }, ""},
		{"tls: mesh match", func() (*Route, bool) { return tab.MatchTLS("web.default", "web", 443, nil) }, "mesh-route"},
		{"tls: gateway-only match skipped", func() (*Route, bool) { return tab.MatchTLS("web.default", "web", 8443, nil) }, ""},
	}
	for _, tt := range tests {
		rt, ok := tt.got()
		switch {
		case tt.want == "" && ok:
			t.Errorf("%s: matched %+v; want no route", tt.name, rt.Dests)
		case tt.want != "" && (!ok || rt.Dests[0].Service != tt.want):
			t.Errorf("%s: got %v %+v; want %s", tt.name, ok, rt, tt.want)
		}
	}
}

// TestL4MatchGatewayNames: tcp and tls match gateways are checked as
// http's are.
func TestL4MatchGatewayNames(t *testing.T) {
	vs := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: [api]\n"
	tests := []struct{ name, doc, want string }{
		{"tcp ok", vs + "  tcp:\n  - match: [{gateways: [mesh, istio-system/gw]}]\n    route: [{destination: {host: api}}]\n", ""},
		{"tcp bad name", vs + "  tcp:\n  - match: [{gateways: [Bad_Name]}]\n    route: [{destination: {host: api}}]\n", "spec.tcp[0].match[0].gateways[0]"},
		{"tls ok", vs + "  tls:\n  - match: [{sniHosts: [api], gateways: [gw]}]\n    route: [{destination: {host: api}}]\n", ""},
		{"tls empty namespace", vs + "  tls:\n  - match: [{sniHosts: [api], gateways: [/gw]}]\n    route: [{destination: {host: api}}]\n", "spec.tls[0].match[0].gateways[0]"},
	}
	for _, tt := range tests {
		checkRefusal(t, tt.name, tt.doc, tt.want)
	}
}

// TestSNIHostSubsetOfHosts: each SNI host of a tls match must be one of
// the VirtualService's hosts or a name or wildcard within one of their
// wildcards (Istio's validateSniHost); anything else is refused by path.
func TestSNIHostSubsetOfHosts(t *testing.T) {
	vs := func(hosts, sni string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: " + hosts +
			"\n  tls:\n  - match: [{sniHosts: " + sni + "}]\n    route: [{destination: {host: api}}]\n"
	}
	tests := []struct{ name, doc, want string }{
		{"same outside host", vs("[mysite.example.com]", "[mysite.example.com]"), ""},
		{"name within a wildcard", vs("['*.bookinfo.com']", "[login.bookinfo.com, reviews.bookinfo.com]"), ""},
		{"wildcard within a wildcard", vs("['*.wikipedia.org']", "['*.wikipedia.org', '*.en.wikipedia.org']"), ""},
		{"mesh service in another form", vs("[api]", "[api.default.svc.cluster.local]"), ""},
		{"other name", vs("[api]", "[a.example.com]"), "spec.tls[0].match[0].sniHosts[0]"},
		{"wider wildcard", vs("['*.en.wikipedia.org']", "['*.wikipedia.org']"), "spec.tls[0].match[0].sniHosts[0]"},
		{"wildcard under a plain host", vs("[en.wikipedia.org]", "['*.wikipedia.org']"), "spec.tls[0].match[0].sniHosts[0]"},
		{"malformed", vs("[api]", "['a..b']"), "spec.tls[0].match[0].sniHosts[0]"},
		{"misplaced star", vs("['*.example.com']", "['a.*.example.com']"), "spec.tls[0].match[0].sniHosts[0]"},
		{"ip address", vs("[api]", "[10.0.0.1]"), "spec.tls[0].match[0].sniHosts[0]"},
	}
	for _, tt := range tests {
		checkRefusal(t, tt.name, tt.doc, tt.want)
	}
}

// TestSNIWildcardRouting: a wildcard SNI host matches the ClientHello's
// name by suffix at run time; a plain one only itself, in any case.
func TestSNIWildcardRouting(t *testing.T) {
	doc := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api, '*.example.com']
  tls:
  - match: [{sniHosts: [login.example.com]}]
    route: [{destination: {host: login}}]
  - match: [{sniHosts: ['*.example.com']}]
    route: [{destination: {host: any}}]
`
	rs, err := Parse([]byte(doc), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tab := Compile(1, rs)
	for sni, want := range map[string]string{"LOGIN.example.com.": "login", "a.b.example.com": "any", "example.com": "", "api": "", "evilexample.com": ""} {
		rt, ok := tab.MatchTLS("api.default", sni, 443, nil)
		switch {
		case want == "" && ok:
			t.Errorf("%q matched %+v", sni, rt.Dests)
		case want != "" && (!ok || rt.Dests[0].Service != want):
			t.Errorf("%q: %v %+v, want %s", sni, ok, rt, want)
		}
	}
}

// checkRefusal is checkParse for one expected fragment ("": accepted).
func checkRefusal(t *testing.T, name, doc, want string) {
	t.Helper()
	if want == "" {
		checkParse(t, name, doc, nil)
		return
	}
	checkParse(t, name, doc, []string{want})
}
