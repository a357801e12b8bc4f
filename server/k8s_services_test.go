package server

import (
	"fmt"
	"net/netip"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/api/configdelta"
	"github.com/sigil-mesh/sigil/k8s/discovery"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestServiceDiscoveryPrefersEndpointSlices: on Kubernetes, a service's
// endpoints are its EndpointSlices'; what sidecars report for it is
// dropped (no pod twice), while reports for services Kubernetes does not
// know (VMs) still count.
func TestServiceDiscoveryPrefersEndpointSlices(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	apiID, _ := naming.WorkloadID(td, "shop", "api")
	vmID, _ := naming.WorkloadID(td, "shop", "legacy")
	api := naming.Service{Name: "api", Namespace: "shop"}
	reported := []registry.ProxyRecord{
		{Service: "api", Namespace: "shop", Address: "10.0.0.1:15006", SPIFFEID: apiID.String()},
		{Service: "legacy", Namespace: "shop", Address: "192.168.1.5:15006", SPIFFEID: vmID.String()},
	}
	k := &discovery.State{Revision: 3, Services: map[naming.Service][]discovery.Endpoint{
		api: {{Service: api, Address: netip.MustParseAddrPort("10.0.0.1:8080"), ServicePort: 80,
			ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Identity: apiID, Labels: map[string]string{"version": "v1"}}},
		{Name: "empty", Namespace: "shop"}: nil,
	}}
	reported = append(reported, registry.ProxyRecord{Service: "empty", Namespace: "shop", Address: "10.0.0.9:15006", SPIFFEID: apiID.String()})
	for _, tc := range []struct {
		name string
		k    *discovery.State
		want []string // service|address|service port|cluster IPs
	}{
		{"plain host", nil, []string{"api|10.0.0.1:15006|0|[]", "empty|10.0.0.9:15006|0|[]", "legacy|192.168.1.5:15006|0|[]"}},
		{"kubernetes", k, []string{"api|10.0.0.1:8080|80|[10.96.0.10]", "legacy|192.168.1.5:15006|0|[]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := &configdelta.Snapshot{Endpoints: map[string]*agentv1.Endpoint{}}
			addEndpoints(snap, reported, tc.k)
			var got []string
			for _, e := range snap.Config().GetEndpoints() {
				got = append(got, e.GetService()+"|"+e.GetAddress()+"|"+fmt.Sprint(e.GetServicePort())+"|"+fmt.Sprint(e.GetClusterIps()))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("endpoints %q, want %q", got, tc.want)
			}
		})
	}
	if endpointsRevision(5, nil) != 5 || endpointsRevision(5, k) != 8 {
		t.Error("endpoints revision is not the store's plus Kubernetes's")
	}
}
