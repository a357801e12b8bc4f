package traffic

import (
	"slices"
	"testing"
)

// TestUnreachableOutsideHosts: routes, mirrors and tcp/tls routes to
// hosts outside the mesh that no DestinationRule says how to reach are
// listed (at the destination's port when it names one); a route for
// gateways only, and a destination a rule (or a wildcard rule) covers,
// are not.
func TestUnreachableOutsideHosts(t *testing.T) {
	rs, err := Parse([]byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cnn}
spec:
  hosts: [edition.cnn.com]
  gateways: [mesh, egress]
  http:
  - match: [{gateways: [egress]}]
    route: [{destination: {host: gateway-only.example.org}}]
  - mirror: {host: copy.example.org}
    route: [{destination: {host: edition.cnn.com}}, {destination: {host: api.example.com, port: {number: 8443}}, weight: 1}]
  tcp:
  - route: [{destination: {host: db.example.org}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cnn}
spec:
  host: edition.cnn.com
  trafficPolicy: {tls: {mode: SIMPLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: example}
spec:
  host: "*.example.com"
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE}
`), "outside.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range UnreachableOutsideHosts(rs) {
		got = append(got, u.Path+" "+u.Host)
	}
	want := []string{
		"spec.http[1].route[1].destination.host api.example.com", // the rule covers port 443, not 8443
		"spec.http[1].mirror.host copy.example.org",
		"spec.tcp[0].route[0].destination.host db.example.org",
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("unreachable:\n%q\nwant\n%q", got, want)
	}
}

// TestHostLabel: the label of a host outside the mesh is the host or
// wildcard a resource names, the most specific of the VirtualServices'
// and DestinationRules' hosts; a host none names stays itself.
func TestHostLabel(t *testing.T) {
	rs, err := Parse([]byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wild}
spec:
  hosts: ["*.example.com", api.example.com]
  http: [{route: [{destination: {host: api.example.com}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wild}
spec:
  host: "*.eu.example.com"
  trafficPolicy: {tls: {mode: SIMPLE}}
`), "labels.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tab := Compile(1, rs)
	for host, want := range map[string]string{
		"api.example.com":   "api.example.com",
		"a.b.example.com":   "*.example.com",
		"x.eu.example.com":  "*.eu.example.com",
		"other.example.org": "other.example.org",
	} {
		if got := tab.HostLabel(host); got != want {
			t.Errorf("HostLabel(%s) = %s, want %s", host, got, want)
		}
	}
}
