package traffic

import (
	"strings"
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
		_, err := Parse([]byte(tt.doc), "f.yaml")
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v; want a refusal naming %s", tt.name, err, tt.want)
		}
	}
}
