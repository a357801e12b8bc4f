package traffic

import (
	"testing"
	"time"
)

// TestLoadBalancerWarmupValidation: Istio's rules for warmup (duration
// required, minimumPercent at most 100, aggression greater than 0), and
// what Istio would drop without a word refused by name.
func TestLoadBalancerWarmupValidation(t *testing.T) {
	lb := func(s string) string { return drDoc("  trafficPolicy: {loadBalancer: " + s + "}\n") }
	tests := []struct {
		name, doc string
		want      []string // nil: accepted
	}{
		{"duration only", lb("{warmup: {duration: 300s}}"), nil},
		{"all fields", lb("{simple: ROUND_ROBIN, warmup: {duration: 300s, minimumPercent: 5.0, aggression: 5.0}}"), nil},
		{"least request", lb("{simple: LEAST_REQUEST, warmup: {duration: 1m, minimumPercent: 0, aggression: 0.5}}"), nil},
		{"minimumPercent 100", lb("{warmup: {duration: 1m, minimumPercent: 100}}"), nil},
		{"older warmupDurationSecs", lb("{simple: ROUND_ROBIN, warmupDurationSecs: 60s}"), nil},
		{"per port", drDoc("  trafficPolicy: {portLevelSettings: [{port: {number: 80}, loadBalancer: {warmup: {duration: 10s}}}]}\n"), nil},
		{"subset", drDoc("  subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {warmup: {duration: 10s}}}}]\n"), nil},
		{"no duration", lb("{warmup: {minimumPercent: 5.0}}"), []string{"spec.trafficPolicy.loadBalancer.warmup.duration", "required"}},
		{"minimumPercent 150", lb("{warmup: {duration: 300s, minimumPercent: 150.0}}"), []string{"spec.trafficPolicy.loadBalancer.warmup.minimumPercent", "between 0 and 100"}},
		{"minimumPercent negative", lb("{warmup: {duration: 300s, minimumPercent: -1}}"), []string{"warmup.minimumPercent", "between 0 and 100"}},
		{"aggression negative", lb("{warmup: {duration: 300s, aggression: -0.1}}"), []string{"spec.trafficPolicy.loadBalancer.warmup.aggression", "greater than 0"}},
		{"aggression 0", lb("{warmup: {duration: 300s, aggression: 0}}"), []string{"warmup.aggression", "greater than 0"}},
		{"duration below 1ms", lb("{warmup: {duration: 0s}}"), []string{"warmup.duration", "at least 1ms"}},
		{"both forms", lb("{warmup: {duration: 1m}, warmupDurationSecs: 60s}"), []string{"loadBalancer.warmupDurationSecs", "beside warmup"}},
		{"random", lb("{simple: RANDOM, warmup: {duration: 1m}}"), []string{"spec.trafficPolicy.loadBalancer.warmup", "RANDOM"}},
		{"random, older form", lb("{simple: RANDOM, warmupDurationSecs: 60s}"), []string{"spec.trafficPolicy.loadBalancer.warmupDurationSecs", "RANDOM"}},
		{"consistent hash", lb("{consistentHash: {httpHeaderName: x-user}, warmup: {duration: 1m}}"), []string{"spec.trafficPolicy.loadBalancer.warmup", "consistentHash"}},
		{"misspelled", lb("{warmup: {duration: 1m, minPercent: 5}}"), []string{`"minPercent"`}},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
}

func TestLoadBalancerWarmupDefaults(t *testing.T) {
	d := &Duration{Duration: time.Minute}
	mp, ag := 5.0, 3.0
	for _, tc := range []struct {
		name string
		lb   *LoadBalancer
		want SlowStart
	}{
		{"none", &LoadBalancer{}, SlowStart{}},
		{"nil", nil, SlowStart{}},
		{"defaults", &LoadBalancer{Warmup: &Warmup{Duration: d}}, SlowStart{Window: time.Minute, MinFraction: 0.1, Aggression: 1}},
		{"set", &LoadBalancer{Warmup: &Warmup{Duration: d, MinimumPercent: &mp, Aggression: &ag}}, SlowStart{Window: time.Minute, MinFraction: 0.05, Aggression: 3}},
		{"older form", &LoadBalancer{WarmupDurationSecs: d}, SlowStart{Window: time.Minute, MinFraction: 0.1, Aggression: 1}},
	} {
		if got := SlowStartOf(tc.lb); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
