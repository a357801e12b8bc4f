package window

import (
	"sort"

	"github.com/sigil-mesh/sigil/telemetry"
)

// sparse is a latency histogram over telemetry's buckets holding only the
// buckets that counted, sorted by bucket: each entry is the bucket index
// in the top 7 bits and its count in the low 25 (a count saturates at
// 2^25-1, 33 million requests of one key in one bucket in 10 s).
type sparse []uint32

const (
	countBits = 25
	countMax  = 1<<countBits - 1
)

// add counts n more in bucket b (b < telemetry.NumBuckets, checked by
// ValidateReport) and returns the histogram, grown if b is new.
func (h sparse) add(b int, n uint64) sparse {
	if n == 0 {
		return h
	}
	i := sort.Search(len(h), func(i int) bool { return int(h[i]>>countBits) >= b })
	if i < len(h) && int(h[i]>>countBits) == b {
		c := uint64(h[i]&countMax) + n
		h[i] = uint32(b)<<countBits | uint32(min(c, countMax))
		return h
	}
	h = append(h, 0)
	copy(h[i+1:], h[i:])
	h[i] = uint32(b)<<countBits | uint32(min(n, countMax))
	return h
}

// addTo adds the histogram's counts to dense, indexed by bucket.
func (h sparse) addTo(dense *[telemetry.NumBuckets]uint64) {
	for _, e := range h {
		dense[e>>countBits] += uint64(e & countMax)
	}
}
