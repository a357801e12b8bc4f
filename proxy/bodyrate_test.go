package proxy

import (
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// The minimum body rate cuts a trickling client, passes a steady upload,
// and does not blame the client for time the proxy spends elsewhere (a
// slow upstream) between reads.
func TestSlowBodyBoundedRateBody(t *testing.T) {
	const window = 300 * time.Millisecond
	rate := newBodyRate(100, window) // 30 bytes a window
	for _, tc := range []struct {
		name      string
		chunk     int           // bytes the client sends at a time
		every     time.Duration // how often the client sends
		total     int           // bytes in the body
		readPause time.Duration // time the reader spends elsewhere between reads
		wantCut   bool
	}{
		{name: "trickle", chunk: 1, every: 100 * time.Millisecond, total: 100, wantCut: true},
		{name: "silent after headers", chunk: 0, every: time.Second, total: 10, wantCut: true},
		{name: "steady upload", chunk: 20, every: 10 * time.Millisecond, total: 2000},
		{name: "slow reader, fast client", chunk: 20, every: 0, total: 60, readPause: 3 * window},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			var aborted atomic.Int32
			b := &rateBody{ReadCloser: pr, abort: func() {
				aborted.Add(1)
				pr.CloseWithError(errors.New("aborted"))
			}}
			rate.watch(b)
			defer rate.unwatch(b)
			go func() {
				sent := 0
				for sent < tc.total {
					if tc.every > 0 {
						time.Sleep(tc.every)
					}
					if tc.chunk == 0 {
						continue
					}
					n := min(tc.chunk, tc.total-sent)
					if _, err := pw.Write(make([]byte, n)); err != nil {
						return
					}
					sent += n
				}
				pw.Close()
			}()
			start := time.Now()
			got := 0
			var err error
			buf := make([]byte, 64)
			for err == nil {
				var n int
				n, err = b.Read(buf)
				got += n
				if tc.readPause > 0 {
					time.Sleep(tc.readPause)
				}
				if time.Since(start) > 10*time.Second {
					t.Fatal("body never ended")
				}
			}
			if tc.wantCut {
				if !errors.Is(err, errBodyTooSlow) || aborted.Load() != 1 {
					t.Fatalf("read %d bytes, error %v, aborts %d; want cut for slowness", got, err, aborted.Load())
				}
				if d := time.Since(start); d > 10*window {
					t.Errorf("cut after %s, want about two windows", d)
				}
				return
			}
			if err != io.EOF || got != tc.total || aborted.Load() != 0 {
				t.Fatalf("read %d of %d bytes, error %v, aborts %d", got, tc.total, err, aborted.Load())
			}
		})
	}
}

// The heartbeat credits waiting only to bodies with a Read in progress,
// judges a window once it is full, and stops when nothing is watched.
func TestBodyRateHeartbeat(t *testing.T) {
	const window = time.Second
	r := &bodyRate{rate: 100, window: window, watched: map[*rateBody]struct{}{}, beating: true}
	var cut atomic.Int32
	waiting := &rateBody{abort: func() { cut.Add(1) }}
	idle := &rateBody{abort: func() { t.Error("a body with no Read in progress was cut") }}
	r.watched[waiting], r.watched[idle] = struct{}{}, struct{}{}
	waiting.reading.Store(true)
	tick := r.tick()
	for range 5 { // the grace period
		r.beat(tick)
	}
	if cut.Load() != 0 || !waiting.graced || idle.graced {
		t.Fatalf("after the grace: cut %d, graced %v/%v", cut.Load(), waiting.graced, idle.graced)
	}
	waiting.got.Add(100) // enough for one window
	for range 5 {
		r.beat(tick)
	}
	if cut.Load() != 0 {
		t.Fatal("a body that kept the rate was cut")
	}
	for range 5 { // a window with nothing
		r.beat(tick)
	}
	if cut.Load() != 1 || !waiting.tooSlow.Load() {
		t.Fatalf("a silent body: cut %d", cut.Load())
	}
	r.unwatch(idle)
	if r.beat(tick) || r.beating {
		t.Fatal("the heartbeat goes on with nothing watched")
	}
}
