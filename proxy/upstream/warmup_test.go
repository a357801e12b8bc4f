package upstream

import (
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/traffic"
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
		{"just Joined: the minimum", slowStart{Window: 100 * time.Second, MinFraction: 0.1, Aggression: 1}, 0, 0.1},
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
	share := func(c *Cluster, fresh *Endpoint) float64 {
		n := 0
		for range picks {
			if c.Pick(nil, "") == fresh {
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
			old1 := &Endpoint{Addr: "a", Joined: start.Add(-time.Hour)}
			old2 := &Endpoint{Addr: "b", Joined: start.Add(-time.Hour)}
			fresh := &Endpoint{Addr: "c", Joined: start}
			policy := &traffic.TrafficPolicy{LoadBalancer: &traffic.LoadBalancer{Simple: map[string]string{lbRoundRobin: "ROUND_ROBIN", lbLeastRequest: "LEAST_REQUEST", lbPeakEWMA: ""}[lb], Warmup: tc.warm}}
			c := &Cluster{Eps: []*Endpoint{old1, fresh, old2}, lb: lbOf(policy), warm: slowStartOf(policy), rr: new(atomic.Uint64), clock: func() time.Time { return now }}
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
	old := &Endpoint{Addr: "a", Joined: now.Add(-time.Hour)}
	fresh := &Endpoint{Addr: "b", Joined: now}
	fresh.Active.Store(3)
	policy := &traffic.TrafficPolicy{LoadBalancer: &traffic.LoadBalancer{Simple: "LEAST_REQUEST", Warmup: &traffic.Warmup{Duration: &traffic.Duration{Duration: time.Minute}}}}
	c := &Cluster{Eps: []*Endpoint{old, fresh}, lb: lbOf(policy), warm: slowStartOf(policy), rr: new(atomic.Uint64), clock: func() time.Time { return now }}
	n := 0
	for range 4000 {
		if c.Pick(nil, "") == fresh {
			n++
		}
	}
	// weights 1 and 0.1/4.
	if got, want := float64(n)/4000, 0.025/1.025; math.Abs(got-want) > 0.005 {
		t.Fatalf("busy new endpoint got %.4f of the picks, want %.4f", got, want)
	}
}
