package proxy

import (
	"context"
	"log/slog"
	"time"
)

// Release after a burst: a sidecar that has served requests and gone
// quiet gives back what the burst brought in, as releaseStartupMemory
// does once ready — heap garbage, and the pages of its executable that
// the burst faulted in (the audit shipper's gRPC and protobuf code, the
// policy engine, TLS): they stay in the page cache and fault back in when
// the next request needs them. Under load nothing is released (the CPU
// the sidecar uses says it is not quiet), so requests never pay for it.
const (
	// quietTick is how often the sidecar checks whether it went quiet.
	quietTick = 250 * time.Millisecond
	// quietCPU is the most CPU time a quiet tick uses (0.4 % of a core):
	// an idle sidecar's timers and file watches take well under it, a
	// sidecar serving a few dozen requests a second more.
	quietCPU = time.Millisecond
	// quietGrowth is how much the resident set must have grown since the
	// last release for a quiet tick to release again.
	quietGrowth = 1 << 20
	// quietSpacing is the least time between two releases after bursts
	// once start-up is over (the 30 s release), so traffic that comes and
	// goes pays for one forced garbage collection per quietSpacing at
	// most. During start-up each first (configuration, connections,
	// requests, audit batch) faults in code once; a quiet tick after each
	// gives it back.
	quietSpacing = 10 * time.Second
)

// quietRelease decides, one tick at a time, when a quiet sidecar releases
// memory. Its clocks and gauges are injected: cpu is the CPU time the
// process used so far, rss its resident bytes (< 0: unknown, never
// release), release gives memory back and returns the bytes it advised.
type quietRelease struct {
	cpu     func() time.Duration
	rss     func() int64
	release func() int64
	spacing time.Duration // least time between two releases after bursts

	lastCPU time.Duration
	advised int64     // bytes the last release advised
	base    int64     // the least resident bytes seen since the last release
	last    time.Time // the last release after a burst (zero: none yet)
}

// newQuietRelease starts counting from now.
func newQuietRelease(cpu func() time.Duration, rss func() int64, release func() int64) *quietRelease {
	return &quietRelease{cpu: cpu, rss: rss, release: release, spacing: quietSpacing, lastCPU: cpu(), base: rss()}
}

// tick is one check at now: it releases, and reports true, when the last
// tick was quiet (under quietCPU), the resident set grew by quietGrowth
// or more over the least seen since the last release, and the last
// release after a burst was spacing or more ago.
func (q *quietRelease) tick(now time.Time) bool {
	c := q.cpu()
	used := c - q.lastCPU
	q.lastCPU = c
	if used >= quietCPU {
		return false
	}
	r := q.rss()
	if r >= 0 && r < q.base {
		q.base = r // start-up's own releases, or the heap shrinking
	}
	if r < 0 || q.base >= 0 && r-q.base < quietGrowth || !q.last.IsZero() && now.Sub(q.last) < q.spacing {
		return false
	}
	q.releaseNow()
	q.last = now
	return true
}

// releaseNow releases memory and counts growth from what is left; it
// returns the bytes advised.
func (q *quietRelease) releaseNow() int64 {
	n := q.release()
	q.advised, q.base = n, q.rss()
	// The release itself (a forced collection) is not the next tick's work.
	q.lastCPU = q.cpu()
	return n
}

// releaseMemory releases start-up memory once ready, after the first
// configuration (1 s) and after the first requests (30 s), and in between
// and afterwards whenever the sidecar goes quiet after a burst
// (quietRelease, checked every quietTick), until ctx is done.
func releaseMemory(ctx context.Context, log *slog.Logger) {
	start := time.Now()
	q := newQuietRelease(processCPU, residentBytes, releaseStartupMemory)
	q.spacing = 0 // until start-up is over
	log.Debug("released start-up memory", "advised_bytes", q.releaseNow())
	startup := []time.Duration{time.Second, 30 * time.Second}
	t := time.NewTicker(quietTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if len(startup) > 0 && now.Sub(start) >= startup[0] {
				startup = startup[1:]
				if len(startup) == 0 {
					q.spacing = quietSpacing
				}
				log.Debug("released start-up memory", "advised_bytes", q.releaseNow())
			} else if q.tick(now) {
				log.Debug("released memory after a burst", "advised_bytes", q.advised)
			}
		}
	}
}
