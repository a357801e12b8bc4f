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
	busy, quiet := 50*time.Millisecond, 500*time.Microsecond
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"quiet after a burst releases", []step{{busy, 20 * mb, false}, {quiet, 20 * mb, true}, {quiet, 8 * mb, false}}},
		{"never under load", []step{{busy, 20 * mb, false}, {busy, 25 * mb, false}, {busy, 25 * mb, false}}},
		{"idle without growth keeps its pages", []step{{quiet, 8 * mb, false}, {quiet, 8*mb + mb/2, false}, {quiet, 8 * mb, false}}},
		{"growth counts from the least seen", []step{{quiet, 6 * mb, false}, {busy, 9 * mb, false}, {quiet, 9 * mb, true}}},
		{"a second burst waits for quietSpacing", []step{
			{quiet, 20 * mb, true}, {busy, 20 * mb, false}, {quiet, 20 * mb, false}, // 2 s after the first: too soon
			{quiet, 20 * mb, false}, {quiet, 20 * mb, false}, {quiet, 20 * mb, false}, {quiet, 20 * mb, false},
			{quiet, 20 * mb, false}, {quiet, 20 * mb, false}, {quiet, 20 * mb, false}, {quiet, 20 * mb, true}, // 10 s after
		}},
		{"no resident set known, no release", []step{{busy, -1, false}, {quiet, -1, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cpu time.Duration
			rss, released := int64(8*mb), 0
			q := newQuietRelease(func() time.Duration { return cpu }, func() int64 { return rss },
				func() int64 { released++; rss = 8 * mb; return 1 })
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
