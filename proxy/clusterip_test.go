package proxy

import (
	"context"
	"net"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
)

// TestClusterIPOriginalDestination: a transparently captured connection's
// original destination names its service by a Kubernetes Service's
// ClusterIP:port, else by an endpoint at that address (a headless
// Service's pod), else by an endpoint on that host (plain hosts, as
// before); a ClusterIP:port two services claim names neither. A
// connection dialled to a pod's endpoint goes to that pod (pinned).
func TestClusterIPOriginalDestination(t *testing.T) {
	const apiID, dbID, webID = "spiffe://example.org/ns/shop/sa/api", "spiffe://example.org/ns/shop/sa/db", "spiffe://example.org/ns/shop/sa/web"
	vip := []string{"10.96.0.10"}
	o := outboundWith(t, "", []*agentv1.Endpoint{
		{Service: "api", Namespace: "shop", Address: "10.0.0.1:8080", SpiffeId: apiID, ServicePort: 80, ClusterIps: vip},
		{Service: "api", Namespace: "shop", Address: "10.0.0.1:9091", SpiffeId: apiID, ServicePort: 9090, ClusterIps: vip},
		{Service: "api", Namespace: "shop", Address: "10.0.0.2:8080", SpiffeId: apiID, ServicePort: 80, ClusterIps: vip},
		{Service: "db", Namespace: "shop", Address: "10.0.0.5:5432", SpiffeId: dbID, ServicePort: 5432, Protocol: "tcp"}, // headless, opaque
		{Service: "web", Namespace: "shop", Address: "192.168.1.2:15006", SpiffeId: webID},                               // a sidecar on a plain host
		{Service: "one", Namespace: "shop", Address: "10.0.0.7:80", SpiffeId: webID, ServicePort: 80, ClusterIps: []string{"10.96.0.99"}},
		{Service: "two", Namespace: "shop", Address: "10.0.0.8:80", SpiffeId: webID, ServicePort: 80, ClusterIps: []string{"10.96.0.99"}},
		// One pod behind two services: the first by name, every time.
		{Service: "zz", Namespace: "shop", Address: "10.0.0.20:80", SpiffeId: webID, ServicePort: 80},
		{Service: "aa", Namespace: "shop", Address: "10.0.0.20:80", SpiffeId: webID, ServicePort: 80},
		{Service: "mm", Namespace: "shop", Address: "10.0.0.20:80", SpiffeId: webID, ServicePort: 80},
	}...)
	for _, tc := range []struct {
		dst  string
		want string // service name, "" for none
		pin  bool   // the connection goes to the dialled pod
	}{
		{"10.96.0.10:80", "api", false},
		{"10.96.0.10:9090", "api", false},
		{"10.96.0.10:81", "", false}, // a port the Service does not have
		{"10.0.0.5:5432", "db", true},
		{"10.0.0.1:8080", "api", true},
		{"192.168.1.2:8080", "web", false},
		{"192.168.1.2:15006", "web", false}, // plain hosts: balanced as before
		{"10.96.0.99:80", "", false},
		{"10.9.9.9:80", "", false},
		{"10.0.0.20:80", "aa", true},
	} {
		addr, err := net.ResolveTCPAddr("tcp", tc.dst)
		if err != nil {
			t.Fatal(err)
		}
		got, pin := o.serviceForAddr(addr)
		if got.Name != tc.want || (pin != "") != tc.pin || (pin != "" && pin != tc.dst) {
			t.Errorf("original destination %s: service %q pin %q, want %q pinned %v", tc.dst, got.Name, pin, tc.want, tc.pin)
		}
	}

	// Each Service port is a cluster of the pods' endpoints on that port;
	// a port the Service does not declare keeps them all.
	st := o.state.Load()
	api := naming.Service{Name: "api", Namespace: "shop"}
	for port, want := range map[uint32][]string{80: {"10.0.0.1:8080", "10.0.0.2:8080"}, 9090: {"10.0.0.1:9091"}, 1: {"10.0.0.1:8080", "10.0.0.1:9091", "10.0.0.2:8080"}} {
		var got []string
		for _, e := range o.clusterAt(st, api, "", port).Eps {
			got = append(got, e.Addr)
		}
		if fmtAny(got) != fmtAny(want) {
			t.Errorf("port %d: endpoints %v, want %v", port, got, want)
		}
	}

	// A port its Service declares opaque TCP is not sniffed; others are.
	db := naming.Service{Name: "db", Namespace: "shop"}
	if !st.opaque[db][5432] || st.opaque[api][80] {
		t.Errorf("opaque ports %v, want db's 5432 only", st.opaque)
	}

	// Pinned to the dialled pod when the route's cluster has it; the
	// route's cluster as is when not.
	c := o.clusterAt(st, api, "", 80)
	for pin, want := range map[string]int{"10.0.0.2:8080": 1, "10.0.0.5:5432": 2, "": 2} {
		ctx := context.WithValue(context.Background(), ctxKey{}, routedDest{api, 80, pin})
		if got := pinned(ctx, c); len(got.Eps) != want || (want == 1 && got.Eps[0].Addr != pin) {
			t.Errorf("pinned to %q: %d endpoints, want %d", pin, len(got.Eps), want)
		}
	}
}
