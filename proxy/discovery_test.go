package proxy

import (
	"log/slog"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Endpoints of the sidecar's first discovery snapshot were there before
// it and join warm; one that appears later joins at the clock's time and
// warms up through the cluster the sidecar builds for it.
func TestLoadBalancerWarmupJoinTime(t *testing.T) {
	self := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	names, err := meshNames(self, "", DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(50_000, 0)
	p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler), names: names}
	o := testOutbound(p)
	o.clock = func() time.Time { return now }
	ep := func(addr string) *agentv1.Endpoint {
		return &agentv1.Endpoint{Service: "api", Address: addr, SpiffeId: "spiffe://example.org/ns/default/sa/api"}
	}
	rs, err := traffic.Parse([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\nspec:\n  host: api\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 300s}}}\n"), "dr.yaml")
	if err != nil {
		t.Fatal(err)
	}
	table := traffic.Compile(1, rs)
	o.setState(table, 1, 1, []*agentv1.Endpoint{ep("10.0.0.1:15006"), ep("10.0.0.2:15006")})
	o.markSynced()
	now = now.Add(time.Minute)
	o.setState(table, 1, 2, []*agentv1.Endpoint{ep("10.0.0.1:15006"), ep("10.0.0.2:15006"), ep("10.0.0.3:15006")})
	c := o.cluster(o.state.Load(), naming.Service{Name: "api", Namespace: "default"}, "")
	if c == nil || len(c.Eps) != 3 {
		t.Fatalf("cluster %+v, want three endpoints", c)
	}
	got := map[string]int{}
	for range 2100 {
		got[c.Pick(nil, "").Addr]++
	}
	// weights 1, 1, 0.1: 1000, 1000, 100.
	if n := got["10.0.0.3:15006"]; n < 90 || n > 110 {
		t.Fatalf("picks %v: the endpoint that joined got %d of 2100, want about 100", got, n)
	}
	for _, a := range []string{"10.0.0.1:15006", "10.0.0.2:15006"} {
		if n := got[a]; n < 950 {
			t.Fatalf("picks %v: %s (there first) got %d, want about 1000", got, a, n)
		}
	}
}
