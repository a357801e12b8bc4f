package upstream

import (
	"math"
	"time"

	"github.com/sigil-mesh/sigil/traffic"
)

// slowStart is a cluster's loadBalancer warmup (Istio's
// WarmupConfiguration, Envoy's slow start): an endpoint that joined less
// than Window ago weighs max(MinFraction, f^(1/Aggression)) of a warm
// one, f being its age (at least 1s, as in Envoy) over Window. The zero
// value: no warmup.
type slowStart traffic.SlowStart

// weight is the share factor, in (0, 1], of an endpoint that joined at
// joined, at now.
func (s slowStart) weight(joined, now time.Time) float64 {
	if s.Window <= 0 || joined.IsZero() {
		return 1
	}
	age := now.Sub(joined)
	if age >= s.Window {
		return 1
	}
	age = max(age, time.Second)
	w := math.Pow(age.Seconds()/s.Window.Seconds(), 1/s.Aggression)
	return min(1, max(s.MinFraction, w))
}

// slowStartOf reads a policy's loadBalancer warmup (validation keeps it
// to the balancers it applies to).
func slowStartOf(p *traffic.TrafficPolicy) slowStart {
	if p == nil {
		return slowStart{}
	}
	return slowStart(traffic.SlowStartOf(p.LoadBalancer))
}

// goldenFrac is the fractional part of the golden ratio: n·goldenFrac mod
// 1 spreads evenly over [0, 1) for n = 1, 2, ... (a low-discrepancy
// sequence), so a counter picks by weight as smoothly as a weighted round
// robin and deterministically.
const goldenFrac = 0.6180339887498949

// warmPick picks among cands by weight when warmup is on and at least one
// of them is still warming: each weighs its warmup factor, divided, for
// the load-aware balancers, by its load (requests in flight + 1 for
// LEAST_REQUEST, as Envoy's weighted least request with its default bias
// of 1; latency × load for the peak-EWMA default). It reports false when
// every candidate is warm, leaving the pick to the balancer.
func (c *Cluster) warmPick(cands []*Endpoint, now time.Time) (*Endpoint, bool) {
	if c.warm.Window <= 0 {
		return nil, false
	}
	ws := make([]float64, len(cands))
	warming := false
	for i, e := range cands {
		ws[i] = c.warm.weight(e.Joined, now)
		warming = warming || ws[i] < 1
	}
	if !warming {
		return nil, false
	}
	total := 0.0
	for i, e := range cands {
		switch c.lb {
		case lbLeastRequest:
			ws[i] /= float64(e.Active.Load() + 1)
		case lbPeakEWMA:
			ws[i] /= e.cost()
		}
		total += ws[i]
	}
	_, u := math.Modf(float64(c.rr.Add(1)) * goldenFrac)
	u *= total
	for i, e := range cands {
		if u < ws[i] {
			return e, true
		}
		u -= ws[i]
	}
	return cands[len(cands)-1], true
}
