package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// errBodyTooSlow ends a request body that arrives slower than the minimum
// rate.
var errBodyTooSlow = errors.New("proxy: request body arrived slower than the minimum rate")

// bodyRate is the minimum rate at which a request body must arrive, as
// Kestrel's MinRequestBodyDataRate: after a grace period, every window of
// that length spent waiting for body bytes must bring rate×window bytes, or
// the request is cut off. Only time spent waiting on the client counts (the
// time the upstream takes to accept what was read does not), and each
// window stands alone, so bytes sent early buy no idle time later: a client
// that trickles (one byte every few minutes, each within the idle timeout)
// cannot hold a connection, while an upload at any rate above the minimum
// is never cut.
//
// Time is counted as Kestrel counts it, by a heartbeat: one goroutine,
// running while some body is watched, visits every watched body each tick
// (a fifth of the window, at most a second) and credits a tick of waiting
// to those with a Read in progress. A Read then costs two atomic stores and
// an atomic add; a timer and two clock readings per Read, as first built,
// made a 4 KiB POST measurably dearer (bench/scripts/ir-per-request.sh
// -b 4096; the figure is in bench/README.md). The price is resolution:
// waiting is known to a tick.
type bodyRate struct {
	rate   int64         // bytes per second; 0: no minimum
	window time.Duration // the grace period, then the measuring window

	mu      sync.Mutex
	watched map[*rateBody]struct{}
	beating bool // the heartbeat goroutine runs
}

func newBodyRate(rate int64, window time.Duration) *bodyRate {
	return &bodyRate{rate: rate, window: window, watched: make(map[*rateBody]struct{})}
}

// tick is the heartbeat's period.
func (b *bodyRate) tick() time.Duration {
	return min(b.window/5, time.Second)
}

// watch adds a body to the heartbeat's round, starting the heartbeat if
// it is not running.
func (b *bodyRate) watch(g *rateBody) {
	b.mu.Lock()
	b.watched[g] = struct{}{}
	if !b.beating {
		b.beating = true
		go b.heartbeat()
	}
	b.mu.Unlock()
}

// unwatch ends the watch of a body whose handler returned.
func (b *bodyRate) unwatch(g *rateBody) {
	g.finished.Store(true)
	b.mu.Lock()
	delete(b.watched, g)
	b.mu.Unlock()
}

// heartbeat visits the watched bodies every tick until none is left.
func (b *bodyRate) heartbeat() {
	d := b.tick()
	t := time.NewTicker(d)
	defer t.Stop()
	for range t.C {
		if !b.beat(d) {
			return
		}
	}
}

// beat credits d of waiting to every body with a Read in progress and
// cuts off those that ended a window too slow; it reports whether any body
// is still watched (when none is, the heartbeat stops).
func (b *bodyRate) beat(d time.Duration) bool {
	var cut []*rateBody
	b.mu.Lock()
	if len(b.watched) == 0 {
		b.beating = false
		b.mu.Unlock()
		return false
	}
	need := b.rate * int64(b.window/time.Millisecond) / 1000
	for g := range b.watched {
		if !g.reading.Load() {
			continue
		}
		g.waited += d
		if g.waited < b.window {
			continue
		}
		got := g.got.Swap(0)
		if g.graced && got < need && !g.finished.Load() {
			g.tooSlow.Store(true)
			delete(b.watched, g)
			cut = append(cut, g)
			continue
		}
		g.graced, g.waited = true, 0
	}
	b.mu.Unlock()
	// Outside the lock: closing a TLS connection may write.
	for _, g := range cut {
		g.abort()
	}
	return true
}

// connAbortKey carries, in an HTTP/1.1 request's context, how to cut off
// the connection it came on (its body cannot be cut alone).
type connAbortKey struct{}

func withConnAbort(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connAbortKey{}, func() { c.Close() })
}

// received is a request body that can tell it has fully arrived
// (h1's bodies can).
type received interface{ Received() bool }

// handler wraps the request bodies next reads. gRPC streams are exempt
// (a client stream may rightly stay quiet for long; grpc-dotnet exempts
// them from Kestrel's minimum too): their idle timeout still bounds them.
func (b *bodyRate) handler(next http.Handler) http.Handler {
	if b == nil || b.rate <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 || strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			next.ServeHTTP(w, r)
			return
		}
		if rb, ok := r.Body.(received); ok && rb.Received() {
			// Already in memory (most small bodies come with their
			// headers): nothing to wait for, so nothing to watch.
			next.ServeHTTP(w, r)
			return
		}
		abort, ok := r.Context().Value(connAbortKey{}).(func())
		if !ok {
			// HTTP/2: cut this stream only.
			rc := http.NewResponseController(w)
			abort = func() { rc.SetReadDeadline(time.Unix(1, 0)) }
		}
		g := &rateBody{ReadCloser: r.Body, abort: abort}
		b.watch(g)
		defer b.unwatch(g)
		r.Body = g
		next.ServeHTTP(w, r)
	})
}

// rateBody is one watched request body.
type rateBody struct {
	io.ReadCloser
	abort func()

	reading  atomic.Bool  // a Read is in progress
	got      atomic.Int64 // bytes read this window
	tooSlow  atomic.Bool
	finished atomic.Bool // the body ended or its handler returned

	// The heartbeat's own, under bodyRate.mu.
	graced bool          // the grace period has been spent
	waited time.Duration // waiting credited this window
}

func (b *rateBody) Read(p []byte) (int, error) {
	if b.tooSlow.Load() {
		return 0, errBodyTooSlow
	}
	b.reading.Store(true)
	n, err := b.ReadCloser.Read(p)
	b.reading.Store(false)
	b.got.Add(int64(n))
	if err != nil {
		b.finished.Store(true)
	}
	if b.tooSlow.Load() {
		return n, errBodyTooSlow
	}
	return n, err
}
