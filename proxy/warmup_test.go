package proxy

import (
	"log/slog"
	"math"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func f64(v float64) *float64 { return &v }

func TestLoadBalancerWarmupWeight(t *testing.T) {
	joined := time.Unix(1000, 0)
	for _, tc := range []struct {
		name string
		s    slowStart
		age  time.Duration
		want float64
	}{
		{"no warmup", slowStart{}, 0, 1},
		{"just joined: the minimum", slowStart{Window: 100 * time.Second, MinFraction: 0.1, Aggression: 1}, 0, 0.1},
		{"age counts as at least 1s", slowStart{Window: 2 * time.Second, MinFraction: 0, Aggression: 1}, 0, 0.5},
		{"half way, linear", slowStart{Window: 100 * time.Second, MinFraction: 0.1, Aggression: 1}, 50 * time.Second, 0.5},
		{"half way, aggression 2", slowStart{Window: 100 * time.Second, MinFraction: 0.1, Aggression: 2}, 50 * time.Second, math.Sqrt(0.5)},
		{"half way, aggression 0.5", slowStart{Window: 100 * time.Second, MinFraction: 0.1, Aggression: 0.5}, 50 * time.Second, 0.25},
		{"the minimum holds early on", slowStart{Window: 100 * time.Second, MinFraction: 0.3, Aggression: 1}, 20 * time.Second, 0.3},
		{"window over", slowStart{Window: 100 * time.Second, MinFraction: 0.1, Aggression: 1}, 100 * time.Second, 1},
		{"unknown join time", slowStart{Window: 100 * time.Second, MinFraction: 0.1, Aggression: 1}, -1, 1},
	} {
		j := joined
		if tc.age < 0 {
			j = time.Time{}
		}
		if got := tc.s.weight(j, joined.Add(max(tc.age, 0))); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: weight %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A new endpoint among two warm ones gets about minimumPercent of a warm
// one's share when it joins, a share on the ramp half way through, and a
// full third once the window is over; for each balancer warmup applies
// to, measured over many picks with a fake clock.
func TestLoadBalancerWarmupRamp(t *testing.T) {
	const picks = 6000
	start := time.Unix(10_000, 0)
	window := 100 * time.Second
	share := func(c *cluster, fresh *endpoint) float64 {
		n := 0
		for range picks {
			if c.pick(nil, "") == fresh {
				n++
			}
		}
		return float64(n) / picks
	}
	for _, lb := range []string{lbRoundRobin, lbLeastRequest, lbPeakEWMA} {
		for _, tc := range []struct {
			name      string
			warm      *traffic.Warmup
			at        time.Duration
			want, tol float64
		}{
			// weights 1, 1, 0.1: the new one gets 0.1/2.1.
			{"joined, defaults", &traffic.Warmup{Duration: &traffic.Duration{Duration: window}}, 0, 0.1 / 2.1, 0.01},
			{"joined, minimumPercent 5", &traffic.Warmup{Duration: &traffic.Duration{Duration: window}, MinimumPercent: f64(5)}, 0, 0.05 / 2.05, 0.01},
			{"half way", &traffic.Warmup{Duration: &traffic.Duration{Duration: window}}, window / 2, 0.5 / 2.5, 0.01},
			{"half way, aggression 5", &traffic.Warmup{Duration: &traffic.Duration{Duration: window}, Aggression: f64(5)}, window / 2, math.Pow(0.5, 0.2) / (2 + math.Pow(0.5, 0.2)), 0.01},
			{"window over", &traffic.Warmup{Duration: &traffic.Duration{Duration: window}}, window, 1.0 / 3, 0.04},
		} {
			now := start.Add(tc.at)
			old1 := &endpoint{addr: "a", joined: start.Add(-time.Hour)}
			old2 := &endpoint{addr: "b", joined: start.Add(-time.Hour)}
			fresh := &endpoint{addr: "c", joined: start}
			policy := &traffic.TrafficPolicy{LoadBalancer: &traffic.LoadBalancer{Simple: map[string]string{lbRoundRobin: "ROUND_ROBIN", lbLeastRequest: "LEAST_REQUEST", lbPeakEWMA: ""}[lb], Warmup: tc.warm}}
			c := &cluster{eps: []*endpoint{old1, fresh, old2}, lb: lbOf(policy), warm: slowStartOf(policy), rr: new(atomic.Uint64), clock: func() time.Time { return now }}
			if got := share(c, fresh); math.Abs(got-tc.want) > tc.tol {
				t.Errorf("%s, %s: the new endpoint got %.3f of the picks, want %.3f ± %.3f", lb, tc.name, got, tc.want, tc.tol)
			}
		}
	}
}

// The older warmupDurationSecs ramps as warmup with its defaults.
func TestLoadBalancerWarmupDurationSecs(t *testing.T) {
	policy := &traffic.TrafficPolicy{LoadBalancer: &traffic.LoadBalancer{Simple: "ROUND_ROBIN", WarmupDurationSecs: &traffic.Duration{Duration: time.Minute}}}
	got := slowStartOf(policy)
	want := slowStart{Window: time.Minute, MinFraction: 0.1, Aggression: 1}
	if got != want {
		t.Fatalf("warmupDurationSecs: %+v, want %+v", got, want)
	}
}

// A new endpoint under load: with LEAST_REQUEST its weight is also divided
// by its requests in flight, so a busy new endpoint gets even less.
func TestLoadBalancerWarmupLeastRequestLoad(t *testing.T) {
	now := time.Unix(10_000, 0)
	old := &endpoint{addr: "a", joined: now.Add(-time.Hour)}
	fresh := &endpoint{addr: "b", joined: now}
	fresh.active.Store(3)
	policy := &traffic.TrafficPolicy{LoadBalancer: &traffic.LoadBalancer{Simple: "LEAST_REQUEST", Warmup: &traffic.Warmup{Duration: &traffic.Duration{Duration: time.Minute}}}}
	c := &cluster{eps: []*endpoint{old, fresh}, lb: lbOf(policy), warm: slowStartOf(policy), rr: new(atomic.Uint64), clock: func() time.Time { return now }}
	n := 0
	for range 4000 {
		if c.pick(nil, "") == fresh {
			n++
		}
	}
	// weights 1 and 0.1/4.
	if got, want := float64(n)/4000, 0.025/1.025; math.Abs(got-want) > 0.005 {
		t.Fatalf("busy new endpoint got %.4f of the picks, want %.4f", got, want)
	}
}

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
	o := &outbound{p: p, clusters: newClusters(), endpoints: map[string]*endpoint{}, clock: func() time.Time { return now }}
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
	if c == nil || len(c.eps) != 3 {
		t.Fatalf("cluster %+v, want three endpoints", c)
	}
	got := map[string]int{}
	for range 2100 {
		got[c.pick(nil, "").addr]++
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
