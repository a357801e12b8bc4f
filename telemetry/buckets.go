// Package telemetry holds what every part of the mesh agrees on about
// golden metrics: the latency buckets sidecars count in, so that agents
// and the server merge histograms by adding counts and compute
// percentiles from the merged counts (never by averaging percentiles).
package telemetry

import (
	"math"
	"time"
)

// Latency buckets are logarithmic: bucket 0 holds latencies up to
// MinLatency, bucket i (1 ≤ i < NumBuckets-1) those in
// (MinLatency·Growth^(i-1), MinLatency·Growth^i], and the last bucket
// everything above. A bucket's upper bound is within Growth of any value
// in it, so a percentile read from merged counts errs by less than 15 %.
const (
	// MinLatency is the upper bound of bucket 0.
	MinLatency = 50 * time.Microsecond
	// Growth is the ratio of consecutive bucket bounds.
	Growth = 1.15
	// NumBuckets is the number of buckets; the last one's bound is above
	// two minutes.
	NumBuckets = 108
)

var logGrowth = math.Log(Growth)

// Bucket returns the index in [0, NumBuckets) of the bucket that holds d.
func Bucket(d time.Duration) int {
	if d <= MinLatency {
		return 0
	}
	i := int(math.Ceil(math.Log(float64(d)/float64(MinLatency)) / logGrowth))
	// Rounding may put a value exactly on a bound one bucket too high.
	if i > 0 && d <= UpperBound(i-1) {
		i--
	}
	if i >= NumBuckets {
		return NumBuckets - 1
	}
	return i
}

// UpperBound returns the upper bound of bucket i (for the last bucket, the
// bound it would have: values above it are counted there too). i must be
// in [0, NumBuckets).
func UpperBound(i int) time.Duration {
	return time.Duration(float64(MinLatency) * math.Pow(Growth, float64(i)))
}

// Quantile returns the q-quantile (0 < q ≤ 1) of the latencies counted in
// counts (indexed by bucket, len ≤ NumBuckets) as the upper bound of the
// bucket where the cumulative count reaches q of the total, and false when
// counts hold nothing.
func Quantile(counts []uint64, q float64) (time.Duration, bool) {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0, false
	}
	rank := uint64(math.Ceil(q * float64(total)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			return UpperBound(i), true
		}
	}
	return UpperBound(len(counts) - 1), true
}
