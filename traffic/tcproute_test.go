package traffic

import (
	"testing"
)

// TestTCPRouteTable: tcp routes match by port and source labels, in
// order, and pick destinations by relative weight, as Istio's TCP
// traffic-shifting task configures them.
func TestTCPRouteTable(t *testing.T) {
	doc := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo]
  tcp:
  - match: [{port: 31400, sourceLabels: {app: canary}}]
    route:
    - destination: {host: tcp-echo, subset: v2}
  - match: [{port: 31400}]
    route:
    - destination: {host: tcp-echo, subset: v1}
      weight: 8
    - destination: {host: tcp-echo, subset: v2}
      weight: 2
`
	rs, err := Parse([]byte(doc), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckReferences(rs); err != nil {
		t.Fatal(err)
	}
	tab := Compile(1, rs)
	if _, ok := tab.MatchTCP("tcp-echo.default", 9000, nil); ok {
		t.Error("port 9000 matched a route for 31400")
	}
	if _, ok := tab.MatchTCP("other.default", 31400, nil); ok {
		t.Error("another service matched")
	}
	rt, ok := tab.MatchTCP("tcp-echo.default", 31400, map[string]string{"app": "canary", "version": "x"})
	if !ok || len(rt.Dests) != 1 || rt.Dests[0].Subset != "v2" {
		t.Fatalf("canary route: %+v", rt)
	}
	rt, ok = tab.MatchTCP("tcp-echo.default", 31400, map[string]string{"app": "web"})
	if !ok || len(rt.Dests) != 2 {
		t.Fatalf("weighted route: %+v", rt)
	}
	counts := map[string]int{}
	for range 10000 {
		counts[rt.Pick().Subset]++
	}
	// 8000 expected; 300 is over 7 standard deviations (sqrt(10000*.8*.2) = 40).
	if counts["v1"] < 7700 || counts["v1"] > 8300 {
		t.Fatalf("8:2 pick: %v", counts)
	}
}

// TestTCPRouteRefusals: each rule of a tcp route names its field.
func TestTCPRouteRefusals(t *testing.T) {
	vs := func(spec string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: [api]\n" + spec
	}
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"no route", vs("  tcp:\n  - match: [{port: 80}]\n"), []string{"spec.tcp[0].route"}},
		{"negative weight", vs("  tcp:\n  - route:\n    - {destination: {host: api}, weight: -1}\n"), []string{"spec.tcp[0].route[0].weight"}},
		{"all zero", vs("  tcp:\n  - route:\n    - {destination: {host: a}, weight: 0}\n    - {destination: {host: b}, weight: 0}\n"), []string{"spec.tcp[0].route", "every weight is 0"}},
		{"bad port", vs("  tcp:\n  - match: [{port: 70000}]\n    route: [{destination: {host: api}}]\n"), []string{"spec.tcp[0].match[0].port"}},
		// A destination outside the mesh is accepted, as for http routes,
		// and kept apart from the mesh's services (hosts.go).
		{"external destination", vs("  tcp:\n  - route: [{destination: {host: db.example.com}}]\n"), nil},
		{"destination subnets", vs("  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/8]}]\n    route: [{destination: {host: api}}]\n"), []string{`field "destinationSubnets"`}},
		{"tls route, sni of another host", vs("  tls:\n  - match: [{sniHosts: [a.example.com], port: 443}]\n    route: [{destination: {host: api}}]\n"), []string{"spec.tls[0].match[0].sniHosts[0]", "does not name one of the VirtualService's hosts"}},
		{"tls route, wildcard sni", vs("  tls:\n  - match: [{sniHosts: ['*.api']}]\n    route: [{destination: {host: api}}]\n"), []string{"spec.tls[0].match[0].sniHosts[0]", "wildcard"}},
		{"tls route, no match", vs("  tls:\n  - route: [{destination: {host: api}}]\n"), []string{"spec.tls[0].match", "sniHosts"}},
		{"tls route, no sniHosts", vs("  tls:\n  - match: [{port: 443}]\n    route: [{destination: {host: api}}]\n"), []string{"spec.tls[0].match[0].sniHosts"}},
		{"tls route, no route", vs("  tls:\n  - match: [{sniHosts: [api]}]\n"), []string{"spec.tls[0].route"}},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
	rs, err := Parse([]byte(vs("  tcp:\n  - route: [{destination: {host: api, subset: v9}}]\n")), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if u := UndefinedSubsets(rs); len(u) != 1 || u[0].Path != "spec.tcp[0].route[0].destination.subset" {
		t.Errorf("undefined subset: %v", u)
	}
}

// FuzzParseTCPAndTLS: whatever tcp routes and DestinationRule tls parse
// compile, and matching and picking on them never panics.
func FuzzParseTCPAndTLS(f *testing.F) {
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  tcp:\n  - match: [{port: 31400, sourceLabels: {app: w}}]\n    route:\n    - {destination: {host: a}, weight: 3}\n    - {destination: {host: b}, weight: 0}\n"))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: api.example.com\n  trafficPolicy: {tls: {mode: SIMPLE, sni: api.example.com, subjectAltNames: [x], caCertificates: /ca.pem}}\n"))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  tls:\n  - match: [{sniHosts: [a], port: 443}]\n    route: [{destination: {host: a}}]\n"))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a, '*.example.com']\n  tls:\n  - match: [{sniHosts: ['*.example.com'], gateways: [mesh]}]\n    route: [{destination: {host: a}}]\n  tcp:\n  - match: [{gateways: [gw]}]\n    route: [{destination: {host: a}}]\n"))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: 10.0.0.1\n  trafficPolicy: {tls: {mode: DISABLE}}\n"))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: edition.cnn.com\n  trafficPolicy: {portLevelSettings: [{port: {number: 443}, tls: {mode: SIMPLE}}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Parse(data, "fuzz")
		if err != nil {
			return
		}
		tab := Compile(1, rs)
		for _, res := range rs {
			if res.VS != nil {
				for _, h := range res.VS.Spec.Hosts {
					for _, port := range []uint32{0, 80, 31400} {
						if rt, ok := tab.MatchTCP(ServiceOf(h, res.Namespace).String(), port, map[string]string{"app": "w"}); ok && len(rt.Dests) > 0 {
							rt.Pick()
						}
						if rt, ok := tab.MatchTLS(ServiceOf(h, res.Namespace).String(), h, port, nil); ok && len(rt.Dests) > 0 {
							rt.Pick()
						}
					}
				}
			}
			if res.DR != nil {
				tp := res.DR.Spec.TrafficPolicy
				if _, ok := tab.ExternalRule(res.DR.Spec.Host, 0); ok != (IsExternalRuleHost(res.DR.Spec.Host) && tp != nil && tp.TLS.Originates()) {
					t.Fatalf("rule for %q: found %v", res.DR.Spec.Host, ok)
				}
				for _, ps := range portsOf(tp) {
					if _, ok := tab.ExternalRule(res.DR.Spec.Host, ps.Port.Number); ok != (IsExternalRuleHost(res.DR.Spec.Host) && ps.TLS.Originates()) {
						t.Fatalf("rule for %q port %d: found %v", res.DR.Spec.Host, ps.Port.Number, ok)
					}
				}
			}
		}
	})
}

// TestTLSRouteTable: tls routes match a connection's SNI (without case or
// trailing dot), port and source labels; a TLS connection no tls route
// matches falls to the tcp routes.
func TestTLSRouteTable(t *testing.T) {
	doc := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: prod}
spec:
  host: api
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: prod}
spec:
  hosts: [api]
  tls:
  - match: [{sniHosts: [api.prod.svc.cluster.local], port: 443}]
    route:
    - destination: {host: api, subset: v2}
  tcp:
  - route:
    - destination: {host: api, subset: v1}
`
	rs, err := Parse([]byte(doc), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckReferences(rs); err != nil {
		t.Fatal(err)
	}
	tab := Compile(1, rs)
	if !tab.HasTLSRoutes("api.prod") || tab.HasTLSRoutes("api.default") {
		t.Fatal("HasTLSRoutes")
	}
	for _, tt := range []struct {
		sni  string
		port uint32
		ok   bool
	}{
		{"api.prod.svc.cluster.local", 443, true},
		{"API.prod.svc.cluster.local.", 443, true},
		{"api.prod.svc.cluster.local", 0, false},
		{"api.prod.svc.cluster.local", 8443, false},
		{"api", 443, false},
		{"", 443, false},
	} {
		rt, ok := tab.MatchTLS("api.prod", tt.sni, tt.port, nil)
		if ok != tt.ok || ok && rt.Dests[0].Subset != "v2" {
			t.Errorf("SNI %q port %d: %v %+v, want %v", tt.sni, tt.port, ok, rt, tt.ok)
		}
	}
	if rt, ok := tab.MatchTCP("api.prod", 443, nil); !ok || rt.Dests[0].Subset != "v1" {
		t.Errorf("tcp fallback: %v %+v", ok, rt)
	}
}

// portsOf is tp's portLevelSettings (none for a nil policy).
func portsOf(tp *TrafficPolicy) []PortTrafficPolicy {
	if tp == nil {
		return nil
	}
	return tp.PortLevelSettings
}

// TestL4RoutesOutsideAndWildcardHosts: tcp and tls routes are kept under
// every host of their VirtualService, as http routes are: a host outside
// the mesh, and a wildcard covering outside hosts or mesh services (the
// most specific host wins). They were dropped before, silently.
func TestL4RoutesOutsideAndWildcardHosts(t *testing.T) {
	rs, err := Parse([]byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wiki}
spec:
  hosts: ["*.wikipedia.org"]
  tls:
  - match: [{port: 443, sniHosts: ["*.wikipedia.org"]}]
    route: [{destination: {host: egress.istio-system.svc.cluster.local, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db.example.com]
  tcp:
  - route: [{destination: {host: replica.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: prod, namespace: prod}
spec:
  hosts: ["*.prod.svc.cluster.local"]
  tcp:
  - route: [{destination: {host: sink.prod.svc.cluster.local}}]
`), "l4.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if err := Validate(r); err != nil {
			t.Fatal(err)
		}
	}
	tab := Compile(1, rs)
	if !tab.HasTLSRoutes("en.wikipedia.org") {
		t.Error("tls routes of *.wikipedia.org do not cover en.wikipedia.org")
	}
	if rt, ok := tab.MatchTLS("en.wikipedia.org", "en.wikipedia.org", 443, nil); !ok || rt.Dests[0].Service != "egress" || rt.Dests[0].Namespace != "istio-system" {
		t.Errorf("tls to en.wikipedia.org: %+v %v, want egress.istio-system", rt, ok)
	}
	if rt, ok := tab.MatchTCP("db.example.com", 5432, nil); !ok || rt.Dests[0].Outside != "replica.example.com" {
		t.Errorf("tcp to db.example.com: %+v %v, want replica.example.com outside the mesh", rt, ok)
	}
	if rt, ok := tab.MatchTCP("api.prod", 9000, nil); !ok || rt.Dests[0].Service != "sink" {
		t.Errorf("tcp to api.prod under *.prod.svc.cluster.local: %+v %v, want sink", rt, ok)
	}
	if _, ok := tab.MatchTCP("api.staging", 9000, nil); ok {
		t.Error("*.prod.svc.cluster.local covers api.staging")
	}
}
