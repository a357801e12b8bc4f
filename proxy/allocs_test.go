package proxy

import (
	"log/slog"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/proxy/upstream"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Each request the caller's sidecar routes looks up its cluster in the
// mesh state's cache: the lookup may not allocate (it joined a string key
// per request before session 25).
func TestRequestPathAllocationsClusterLookup(t *testing.T) {
	self := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	names, err := meshNames(self, "", DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler), names: names}
	o := &outbound{p: p, clusters: upstream.NewClusters(), endpoints: map[string]*upstream.Endpoint{}}
	o.setState(traffic.Compile(0, nil), 1, 1, []*agentv1.Endpoint{{Service: "api", Address: "10.0.0.1:15006", SpiffeId: "spiffe://example.org/ns/default/sa/api"}})
	st := o.state.Load()
	api := naming.Service{Name: "api", Namespace: "default"}
	for _, port := range []uint32{0, 80} {
		first := o.clusterAt(st, api, "", port)
		if first == nil {
			t.Fatalf("port %d: no cluster for api", port)
		}
		if again := o.clusterAt(st, api, "", port); again != first {
			t.Fatalf("port %d: a second lookup built another cluster", port)
		}
		if n := testing.AllocsPerRun(100, func() { o.clusterAt(st, api, "", port) }); n != 0 {
			t.Errorf("port %d: %.1f allocations per cached lookup, want 0", port, n)
		}
	}
}
