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

// bounds holds every bucket's upper bound, computed once: Bucket runs on
// every request a sidecar carries, and math.Log and math.Pow there cost
// about 300 instructions of a sidecar's ~77,000 per request.
var bounds = func() (b [NumBuckets]time.Duration) {
	for i := range b {
		b[i] = time.Duration(float64(MinLatency) * math.Pow(Growth, float64(i)))
	}
	return b
}()

// Bucket returns the index in [0, NumBuckets) of the bucket that holds d:
// the first whose upper bound is at least d, or the last.
func Bucket(d time.Duration) int {
	lo, hi := 0, NumBuckets-1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if d <= bounds[mid] {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// UpperBound returns the upper bound of bucket i (for the last bucket, the
// bound it would have: values above it are counted there too). i must be
// in [0, NumBuckets).
func UpperBound(i int) time.Duration {
	return bounds[i]
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
