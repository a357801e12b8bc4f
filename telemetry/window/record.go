package window

import (
	"encoding/binary"
	"slices"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/telemetry"
)

// counts is one key's counts in one slot, decoded: hist holds only the
// buckets that counted, sorted by bucket.
type counts struct {
	requests, failures, tcpOpened, bytesSent, bytesReceived uint64
	dryRunDenied                                            uint64
	hist                                                    []bucketCount
}

type bucketCount struct {
	bucket uint8
	n      uint64
}

// A slot keeps each key's counts as one record in a byte arena, varints
// end to end: requests, failures, tcp_opened, bytes_sent, bytes_received,
// dryrun_denied, the number of buckets, then per bucket its index (one byte: there are
// fewer than 128) and count. Small counts take a byte each, so a record
// is a fraction of the fixed-width struct it decodes to; that is what
// keeps 1000 workloads' window within the memory bound
// (bench/README.md has the figure).

func (c *counts) reset() { *c = counts{hist: c.hist[:0]} }

// addSeries adds a validated series (ValidateReport) to c.
func (c *counts) addSeries(se *agentv1.StatsSeries) {
	c.requests = satAdd(c.requests, se.GetRequests())
	c.failures = satAdd(c.failures, se.GetFailures())
	c.tcpOpened = satAdd(c.tcpOpened, se.GetTcpOpened())
	c.bytesSent = satAdd(c.bytesSent, se.GetBytesSent())
	c.bytesReceived = satAdd(c.bytesReceived, se.GetBytesReceived())
	c.dryRunDenied = satAdd(c.dryRunDenied, se.GetDryrunDenied())
	counts := se.GetBucketCount()
	for i, b := range se.GetBucketIndex() {
		c.addBucket(uint8(b), counts[i])
	}
}

func (c *counts) addBucket(b uint8, n uint64) {
	if n == 0 {
		return
	}
	i, found := slices.BinarySearchFunc(c.hist, b, func(e bucketCount, b uint8) int { return int(e.bucket) - int(b) })
	if found {
		c.hist[i].n = satAdd(c.hist[i].n, n)
		return
	}
	c.hist = slices.Insert(c.hist, i, bucketCount{bucket: b, n: n})
}

// encode appends c's record to dst.
func (c *counts) encode(dst []byte) []byte {
	for _, v := range []uint64{c.requests, c.failures, c.tcpOpened, c.bytesSent, c.bytesReceived, c.dryRunDenied, uint64(len(c.hist))} {
		dst = binary.AppendUvarint(dst, v)
	}
	for _, e := range c.hist {
		dst = append(dst, e.bucket)
		dst = binary.AppendUvarint(dst, e.n)
	}
	return dst
}

// decode reads a record from the start of src into c (replacing what c
// held) and returns its length; records are the store's own, so a short
// or bad one (never written) reads as what was decoded up to it.
func (c *counts) decode(src []byte) int {
	c.reset()
	pos := 0
	next := func() uint64 {
		v, n := binary.Uvarint(src[pos:])
		if n <= 0 {
			pos = len(src)
			return 0
		}
		pos += n
		return v
	}
	c.requests, c.failures, c.tcpOpened, c.bytesSent, c.bytesReceived, c.dryRunDenied = next(), next(), next(), next(), next(), next()
	nb := next()
	for i := uint64(0); i < nb && pos < len(src); i++ {
		b := src[pos]
		pos++
		c.hist = append(c.hist, bucketCount{bucket: b, n: next()})
	}
	return pos
}

// addTo adds c's histogram to dense, indexed by bucket.
func (c *counts) addTo(dense *[telemetry.NumBuckets]uint64) {
	for _, e := range c.hist {
		if int(e.bucket) < telemetry.NumBuckets {
			dense[e.bucket] = satAdd(dense[e.bucket], e.n)
		}
	}
}

// satAdd is a+b, or the largest uint64 where that would wrap: a count
// that saturates stays wrong in one direction, never wraps to small.
func satAdd(a, b uint64) uint64 {
	if a > ^uint64(0)-b {
		return ^uint64(0)
	}
	return a + b
}
