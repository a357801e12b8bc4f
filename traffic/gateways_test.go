package traffic

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// A VirtualService applies to sidecars when gateways is absent or names
// mesh; a match with gateways applies only if they name mesh (and then
// its sourceLabels are not consulted, as in Istio's sourceMatchHTTP); a
// route whose every match is for gateways is not a catch-all.
func TestGatewaySelection(t *testing.T) {
	const head = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\nspec:\n  hosts: [api]\n"
	tests := []struct {
		name, spec string
		want       string // route name matched, "" for none
	}{
		{"no gateways: sidecars", "  http:\n  - name: a\n    route:\n    - destination: {host: api}\n", "a"},
		{"mesh and a gateway", "  gateways: [mesh, bookinfo-gateway]\n  http:\n  - name: a\n    route:\n    - destination: {host: api}\n", "a"},
		{"gateway only: no effect", "  gateways: [bookinfo-gateway]\n  http:\n  - name: a\n    route:\n    - destination: {host: api}\n", ""},
		{"namespaced gateway only", "  gateways: [istio-system/gw]\n  http:\n  - name: a\n    route:\n    - destination: {host: api}\n", ""},
		{"match for a gateway skipped, next route applies", "  gateways: [mesh, gw]\n  http:\n  - name: a\n    match:\n    - gateways: [gw]\n    route:\n    - destination: {host: api}\n  - name: b\n    route:\n    - destination: {host: api}\n", "b"},
		{"match for mesh", "  gateways: [mesh, gw]\n  http:\n  - name: a\n    match:\n    - gateways: [mesh]\n    route:\n    - destination: {host: api}\n", "a"},
		{"gateway match never a catch-all", "  http:\n  - name: a\n    match:\n    - gateways: [gw]\n    route:\n    - destination: {host: api}\n", ""},
		{"mesh match ignores sourceLabels", "  http:\n  - name: a\n    match:\n    - gateways: [mesh]\n      sourceLabels: {app: other}\n    route:\n    - destination: {host: api}\n", "a"},
		{"sourceLabels without gateways still apply", "  http:\n  - name: a\n    match:\n    - sourceLabels: {app: other}\n    route:\n    - destination: {host: api}\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := Compile(1, mustParse(t, head+tt.spec))
			m, ok := tab.Match("api.default", httptest.NewRequest("GET", "http://api/", nil), map[string]string{"app": "web"})
			got := ""
			if ok {
				got = m.Name
			}
			if got != tt.want {
				t.Fatalf("matched %q, want %q", got, tt.want)
			}
			if tt.want == "" && strings.Contains(tt.spec, "gateways: [") && !strings.Contains(tt.spec, "mesh") && tab.HasRoutes("api.default") {
				t.Fatal("a VirtualService for gateways only left routes at the sidecar")
			}
		})
	}
}

// match.port selects routes by the port the request is for.
func TestPortSelection(t *testing.T) {
	tab := Compile(1, mustParse(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  http:
  - name: p8080
    match:
    - port: 8080
    route:
    - destination: {host: api}
    mirror: {host: api, port: {number: 7000}}
  - name: p9090
    match:
    - port: 9090
      uri: {prefix: /v}
    route:
    - destination: {host: api, port: {number: 9091}}
`))
	for _, tt := range []struct {
		port uint32
		path string
		want string
	}{
		{8080, "/", "p8080"}, {9090, "/v1", "p9090"}, {9090, "/x", ""}, {80, "/", ""}, {0, "/v1", ""},
	} {
		m, ok := tab.MatchPort("api.default", tt.port, httptest.NewRequest("GET", "http://api"+tt.path, nil), nil)
		got := ""
		if ok {
			got = m.Name
		}
		if got != tt.want {
			t.Errorf("port %d %s: matched %q, want %q", tt.port, tt.path, got, tt.want)
		}
		if got == "p8080" && m.MirrorPort != 7000 {
			t.Errorf("mirror port %d, want 7000", m.MirrorPort)
		}
		if got == "p9090" && m.Dests[0].Port != 9091 {
			t.Errorf("destination port %d, want 9091", m.Dests[0].Port)
		}
	}
}

// A VirtualService with no route whose matches can apply to this sidecar
// at this port (by port, sourceLabels or gateways) leaves the service's
// default route in force there, as Istio drops it from that port's routes;
// one that has such routes but none matching answers 404.
func TestRoutesAtPortAndSidecar(t *testing.T) {
	const head = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\nspec:\n  hosts: [api]\n  http:\n"
	const route = "    route:\n    - destination: {host: api}\n"
	web := map[string]string{"app": "web"}
	for _, tt := range []struct {
		name, match string
		port        uint32
		want        bool
	}{
		{"no match", "  - name: all\n", 80, true},
		{"other port", "  - match: [{port: 8080}]\n", 80, false},
		{"its port", "  - match: [{port: 8080}]\n", 8080, true},
		{"uri at any port", "  - match: [{uri: {prefix: /x}}]\n", 80, true},
		{"other sidecar", "  - match: [{sourceLabels: {app: other}}]\n", 80, false},
		{"this sidecar", "  - match: [{sourceLabels: {app: web}, port: 80}]\n", 80, true},
		{"mesh match", "  - match: [{gateways: [mesh], sourceLabels: {app: other}}]\n", 80, true},
		{"gateway match only", "  - match: [{gateways: [gw]}]\n", 80, false},
	} {
		tab := Compile(1, mustParse(t, head+tt.match+route))
		if got := tab.HasRoutesAt("api.default", tt.port, web); got != tt.want {
			t.Errorf("%s: HasRoutesAt port %d = %v, want %v", tt.name, tt.port, got, tt.want)
		}
	}
}

// portLevelSettings: the rule's, then the subset's fields, then the
// subset's entry for the port; an entry inherits nothing.
func TestPortLevelPolicy(t *testing.T) {
	tab := Compile(1, mustParse(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api
spec:
  host: api
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    connectionPool: {tcp: {maxConnections: 10}}
    portLevelSettings:
    - port: {number: 80}
      loadBalancer: {simple: LEAST_REQUEST}
    - port: {number: 9080}
      connectionPool: {tcp: {maxConnections: 1}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 2}
      portLevelSettings:
      - port: {number: 7070}
        loadBalancer: {simple: ROUND_ROBIN}
`))
	lb := func(p *TrafficPolicy) string {
		if p == nil || p.LoadBalancer == nil {
			return "-"
		}
		return p.LoadBalancer.Simple
	}
	conns := func(p *TrafficPolicy) int32 {
		if p == nil || p.ConnectionPool == nil || p.ConnectionPool.TCP == nil {
			return 0
		}
		return p.ConnectionPool.TCP.MaxConnections
	}
	for _, tt := range []struct {
		subset   string
		port     uint32
		lb       string
		conns    int32
		outliers bool
	}{
		{"", 0, "RANDOM", 10, false},
		{"", 80, "LEAST_REQUEST", 0, false}, // the entry inherits nothing
		{"", 9080, "-", 1, false},
		{"", 1234, "RANDOM", 10, false},
		{"v1", 0, "RANDOM", 10, true},
		{"v1", 80, "LEAST_REQUEST", 0, true},
		{"v1", 7070, "ROUND_ROBIN", 0, false},
	} {
		p := tab.PolicyAt("api.default", tt.subset, tt.port)
		if lb(p) != tt.lb || conns(p) != tt.conns || (p.OutlierDetection != nil) != tt.outliers || len(p.PortLevelSettings) != 0 {
			t.Errorf("subset %q port %d: lb %s, maxConnections %d, outlierDetection %v; want %s, %d, %v", tt.subset, tt.port, lb(p), conns(p), p.OutlierDetection != nil, tt.lb, tt.conns, tt.outliers)
		}
	}
}

// Gateway names, match ports and portLevelSettings are checked as Istio
// checks them, naming the field.
func TestGatewayAndPortValidation(t *testing.T) {
	vs := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\nspec:\n"
	dr := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: api\nspec:\n  host: api\n"
	route := "  http:\n  - route:\n    - destination: {host: api}\n"
	tests := []struct{ name, doc, want string }{
		{"ok: mesh, name, ns/name", vs + "  hosts: [api]\n  gateways: [mesh, gw, istio-system/gw, gw.istio-system.svc.cluster.local]\n" + route, ""},
		{"ok: '*' for a gateway", vs + "  hosts: ['*', uk.bookinfo.com, '*.example.com']\n  gateways: [gw]\n" + route, ""},
		{"'*' is for gateways only", vs + "  hosts: ['*']\n  gateways: [mesh, gw]\n" + route, "spec.hosts[0]"},
		{"bad gateway name", vs + "  hosts: [api]\n  gateways: [Bad_Name]\n" + route, "spec.gateways[0]"},
		{"empty namespace", vs + "  hosts: [api]\n  gateways: [/gw]\n" + route, "spec.gateways[0]"},
		{"bad namespace", vs + "  hosts: [api]\n  gateways: [a.b/gw]\n" + route, "spec.gateways[0]"},
		{"bad match gateway", vs + "  hosts: [api]\n  http:\n  - match:\n    - gateways: ['x/']\n    route:\n    - destination: {host: api}\n", "spec.http[0].match[0].gateways[0]"},
		{"bad match port", vs + "  hosts: [api]\n  http:\n  - match:\n    - port: 70000\n    route:\n    - destination: {host: api}\n", "spec.http[0].match[0].port"},
		{"destination port 0", vs + "  hosts: [api]\n  http:\n  - route:\n    - destination: {host: api, port: {number: 0}}\n", "spec.http[0].route[0].destination.port.number"},
		{"mirror port", vs + "  hosts: [api]\n  http:\n  - route:\n    - destination: {host: api}\n    mirror: {host: api, port: {number: 65536}}\n", "spec.http[0].mirror.port.number"},
		{"bad gateway host", vs + "  hosts: ['a..b']\n  gateways: [gw]\n" + route, "spec.hosts[0]"},
		{"port level: no port", dr + "  trafficPolicy:\n    portLevelSettings:\n    - loadBalancer: {simple: RANDOM}\n", "spec.trafficPolicy.portLevelSettings[0].port"},
		{"port level: port 0", dr + "  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 0}\n      loadBalancer: {simple: RANDOM}\n", "spec.trafficPolicy.portLevelSettings[0].port.number"},
		{"port level: nothing set", dr + "  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n", "spec.trafficPolicy.portLevelSettings[0]: set at least one"},
		{"port level: repeated port", dr + "  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n      loadBalancer: {simple: RANDOM}\n    - port: {number: 80}\n      loadBalancer: {simple: RANDOM}\n", "portLevelSettings[1].port.number: 80 repeats"},
		{"port level: bad field", dr + "  subsets:\n  - name: v1\n    labels: {v: '1'}\n    trafficPolicy:\n      portLevelSettings:\n      - port: {number: 80}\n        loadBalancer: {simple: FASTEST}\n", "spec.subsets[0].trafficPolicy.portLevelSettings[0].loadBalancer.simple"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), "test.yaml")
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted; want a refusal naming %s", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("%v\nwant it to name %s", err, tt.want)
			}
		})
	}
}

// FuzzGatewaysAndPorts: whatever parses compiles, and selecting routes
// and policies by any port never panics; a VirtualService for gateways
// only leaves nothing at the sidecar.
func FuzzGatewaysAndPorts(f *testing.F) {
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  gateways: [mesh, ns/gw]\n  http:\n  - match: [{port: 8080, gateways: [mesh]}, {gateways: [gw]}]\n    route: [{destination: {host: a, port: {number: 9080}}}]\n"), uint32(8080))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: ['*.example.com']\n  gateways: [gw]\n  http: [{route: [{destination: {host: a}}]}]\n"), uint32(80))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a\n  trafficPolicy:\n    portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: RANDOM}}]\n  subsets:\n  - name: v1\n    labels: {v: '1'}\n    trafficPolicy: {portLevelSettings: [{port: {number: 81}, outlierDetection: {consecutive5xxErrors: 1}}]}\n"), uint32(81))
	f.Fuzz(func(t *testing.T, data []byte, port uint32) {
		rs, err := Parse(data, "fuzz")
		if err != nil {
			return
		}
		tab := Compile(1, rs)
		r := httptest.NewRequest("GET", "http://a/x", nil)
		for _, res := range rs {
			switch {
			case res.VS != nil:
				for _, h := range res.VS.Spec.Hosts {
					key := ServiceOf(h, res.Namespace).String()
					if !AppliesToMesh(res.VS.Spec.Gateways) && tab.HasRoutes(key) && len(rs) == 1 {
						t.Fatalf("a VirtualService for gateways %v left routes for %s", res.VS.Spec.Gateways, key)
					}
					if m, ok := tab.MatchPort(key, port, r, nil); ok && len(m.Dests) > 0 {
						m.Pick()
					}
				}
			case res.DR != nil:
				key := ServiceOf(res.DR.Spec.Host, res.Namespace).String()
				for _, s := range append(res.DR.Spec.Subsets, Subset{}) {
					if p := tab.PolicyAt(key, s.Name, port); p != nil && len(p.PortLevelSettings) > 0 {
						t.Fatalf("PolicyAt left portLevelSettings: %+v", p)
					}
				}
			}
		}
	})
}
