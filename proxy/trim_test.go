package proxy

import (
	"testing"
	"time"
)

// TestReleaseMemoryAfterABurst: quietRelease gives memory back on the first
// quiet tick after the resident set grew, never while the sidecar works,
// never for growth under quietGrowth, and at most once per quietSpacing.
func TestReleaseMemoryAfterABurst(t *testing.T) {
	type step struct {
		cpu     time.Duration // CPU used since the last tick
		rss     int64         // resident bytes at the tick
		release bool          // want a release
	}
	const mb = 1 << 20
	busy, quiet := 50*time.Millisecond, quietCPU/2
	// spaced is a release, quiet ticks with rss resident until just before
	// quietSpacing has passed (none releases), then one that does.
	spaced := func(rss int64) []step {
		steps := []step{{quiet, rss, true}, {busy, rss, false}}
		for range int(quietSpacing/quietTick) - 2 {
			steps = append(steps, step{quiet, rss, false})
		}
		return append(steps, step{quiet, rss, true})
	}
	for _, tc := range []struct {
		name    string
		startup bool // spacing 0, as during start-up
		steps   []step
	}{
		{"quiet after a burst releases", false, []step{{busy, 20 * mb, false}, {quiet, 20 * mb, true}, {quiet, 8 * mb, false}}},
		{"never under load", false, []step{{busy, 20 * mb, false}, {busy, 25 * mb, false}, {busy, 25 * mb, false}}},
		{"idle without growth keeps its pages", false, []step{{quiet, 8 * mb, false}, {quiet, 8*mb + mb/2, false}, {quiet, 8 * mb, false}}},
		{"growth counts from the least seen", false, []step{{quiet, 6 * mb, false}, {busy, 9 * mb, false}, {quiet, 9 * mb, true}}},
		{"a second burst waits for quietSpacing", false, spaced(20 * mb)},
		{"no resident set known, no release", false, []step{{busy, -1, false}, {quiet, -1, false}}},
		{"start-up releases after each burst", true, []step{{quiet, 20 * mb, true}, {busy, 20 * mb, false}, {quiet, 20 * mb, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cpu time.Duration
			rss, released := int64(8*mb), 0
			q := newQuietRelease(func() time.Duration { return cpu }, func() int64 { return rss },
				func() int64 { released++; rss = 8 * mb; return 1 })
			if tc.startup {
				q.spacing = 0
			}
			now := time.Unix(1e9, 0)
			for i, s := range tc.steps {
				cpu += s.cpu
				rss = s.rss
				now = now.Add(quietTick)
				before := released
				if got := q.tick(now); got != s.release || (released > before) != s.release {
					t.Fatalf("step %d (cpu %s, rss %d): released %v (%d calls), want %v", i, s.cpu, s.rss, got, released-before, s.release)
				}
			}
		})
	}
}
