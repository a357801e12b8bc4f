package traffic

import "time"

// Warmup is Istio's WarmupConfiguration (Envoy's slow_start_config): for
// Duration after an endpoint joins a service, its weight in the balancer
// is scaled by max(MinimumPercent/100, f^(1/Aggression)), where f is the
// time since it joined (at least 1s) over Duration. With the defaults the
// new endpoint starts at 10% of an old one's share and ramps linearly.
type Warmup struct {
	// Duration is the window (required, at least 1ms).
	Duration *Duration `json:"duration,omitempty"`
	// MinimumPercent is the least share a warming endpoint gets, in
	// percent of a warm one's: 0 to 100, default 10.
	MinimumPercent *float64 `json:"minimumPercent,omitempty"`
	// Aggression shapes the ramp: 1 (the default) is linear, more than 1
	// ramps faster at first, less than 1 slower; greater than 0.
	Aggression *float64 `json:"aggression,omitempty"`
}

// Defaults of WarmupConfiguration's optional fields (Istio, Envoy).
const (
	DefaultWarmupMinimumPercent = 10.0
	DefaultWarmupAggression     = 1.0
)

// SlowStart is a load balancer's warmup resolved: Window zero means no
// warmup.
type SlowStart struct {
	Window time.Duration
	// MinFraction is MinimumPercent/100.
	MinFraction float64
	Aggression  float64
}

// SlowStartOf resolves lb's warmup, or its older warmupDurationSecs, with
// the defaults filled in; the zero SlowStart when neither is set.
func SlowStartOf(lb *LoadBalancer) SlowStart {
	if lb == nil {
		return SlowStart{}
	}
	switch {
	case lb.Warmup != nil && lb.Warmup.Duration != nil:
		s := SlowStart{Window: lb.Warmup.Duration.Duration, MinFraction: DefaultWarmupMinimumPercent / 100, Aggression: DefaultWarmupAggression}
		if m := lb.Warmup.MinimumPercent; m != nil {
			s.MinFraction = *m / 100
		}
		if a := lb.Warmup.Aggression; a != nil {
			s.Aggression = *a
		}
		return s
	case lb.WarmupDurationSecs != nil:
		return SlowStart{Window: lb.WarmupDurationSecs.Duration, MinFraction: DefaultWarmupMinimumPercent / 100, Aggression: DefaultWarmupAggression}
	}
	return SlowStart{}
}

// warmup checks a loadBalancer's warmup as Istio does (duration required,
// minimumPercent at most 100, aggression greater than 0), and refuses by
// name what Istio accepts and then drops without a word: warmup beside
// RANDOM or consistentHash (Envoy's slow start exists for round robin and
// least request only), and warmup beside warmupDurationSecs (Istio takes
// the first and ignores the second).
func (v *validator) warmup(p string, lb *LoadBalancer) {
	if lb.Warmup == nil && lb.WarmupDurationSecs == nil {
		return
	}
	if w := lb.Warmup; w != nil {
		if w.Duration == nil {
			v.fail(p+".warmup.duration", "required: the time over which a new endpoint's share ramps up")
		}
		v.duration(p+".warmup.duration", w.Duration)
		if m := w.MinimumPercent; m != nil && (*m < 0 || *m > 100) {
			v.fail(p+".warmup.minimumPercent", "%v: must be between 0 and 100", *m)
		}
		if a := w.Aggression; a != nil && *a <= 0 {
			v.fail(p+".warmup.aggression", "%v: must be greater than 0", *a)
		}
		if lb.WarmupDurationSecs != nil {
			v.fail(p+".warmupDurationSecs", "is set beside warmup: set only warmup (warmupDurationSecs is its older form)")
		}
	}
	if lb.WarmupDurationSecs != nil {
		v.duration(p+".warmupDurationSecs", lb.WarmupDurationSecs)
	}
	field := p + ".warmup"
	if lb.Warmup == nil {
		field = p + ".warmupDurationSecs"
	}
	switch {
	case lb.ConsistentHash != nil:
		v.fail(field, "is not supported with consistentHash: warmup ramps a balancer's weights, and a hash picks by key (Envoy's slow start is for ROUND_ROBIN and LEAST_REQUEST)")
	case lb.Simple == "RANDOM":
		v.fail(field, "is not supported with simple RANDOM: warmup applies to ROUND_ROBIN, LEAST_REQUEST and the default balancer (Envoy's slow start)")
	}
}
