package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
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
type bodyRate struct {
	rate   int64         // bytes per second; 0: no minimum
	window time.Duration // the grace period, then the measuring window
}

// connAbortKey carries, in an HTTP/1.1 request's context, how to cut off
// the connection it came on (its body cannot be cut alone).
type connAbortKey struct{}

func withConnAbort(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connAbortKey{}, func() { c.Close() })
}

// handler wraps the request bodies next reads. gRPC streams are exempt
// (a client stream may rightly stay quiet for long; grpc-dotnet exempts
// them from Kestrel's minimum too): their idle timeout still bounds them.
func (b bodyRate) handler(next http.Handler) http.Handler {
	if b.rate <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 || strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			next.ServeHTTP(w, r)
			return
		}
		abort, ok := r.Context().Value(connAbortKey{}).(func())
		if !ok {
			// HTTP/2: cut this stream only.
			rc := http.NewResponseController(w)
			abort = func() { rc.SetReadDeadline(time.Unix(1, 0)) }
		}
		g := &rateBody{ReadCloser: r.Body, rate: b, abort: abort, now: time.Now}
		defer g.stop()
		r.Body = g
		next.ServeHTTP(w, r)
	})
}

// rateBody enforces a bodyRate on one request body.
type rateBody struct {
	io.ReadCloser
	rate  bodyRate
	abort func()
	now   func() time.Time

	mu       sync.Mutex
	graced   bool          // the grace period has been spent
	gen      uint64        // counts Reads, so a stale timer knows it is one
	since    time.Time     // when the pending Read (or its window) began
	waited   time.Duration // time spent in Read this window
	got      int64         // bytes read this window
	timer    *time.Timer
	tooSlow  bool
	finished bool
}

func (b *rateBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.tooSlow {
		b.mu.Unlock()
		return 0, errBodyTooSlow
	}
	b.since = b.now()
	b.gen++
	gen := b.gen
	b.timer = time.AfterFunc(b.rate.window-b.waited, func() { b.expire(gen) })
	b.mu.Unlock()

	n, err := b.ReadCloser.Read(p)

	b.mu.Lock()
	defer b.mu.Unlock()
	b.timer.Stop()
	b.timer = nil
	if b.tooSlow {
		return n, errBodyTooSlow
	}
	if err != nil {
		b.finished = true
	}
	b.got += int64(n)
	b.waited += b.now().Sub(b.since)
	if b.waited >= b.rate.window {
		b.endWindow()
	}
	if b.tooSlow {
		return n, errBodyTooSlow
	}
	return n, err
}

// expire runs when Read number gen, still waiting, has used up the
// window; a timer that fired as its Read returned finds a later gen.
func (b *rateBody) expire(gen uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished || b.timer == nil || b.gen != gen {
		return
	}
	b.endWindow()
	if !b.tooSlow {
		// The Read goes on waiting, in the next window.
		b.since = b.now()
		b.timer.Reset(b.rate.window)
	}
}

// endWindow judges the window that just ended (the grace period passes
// whatever came) and starts the next; called with mu held.
func (b *rateBody) endWindow() {
	need := b.rate.rate * int64(b.rate.window/time.Millisecond) / 1000
	if b.graced && b.got < need && !b.finished {
		b.tooSlow = true
		b.abort()
		return
	}
	b.graced, b.waited, b.got = true, 0, 0
}

// stop ends the watch when the handler returns.
func (b *rateBody) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished = true
	if b.timer != nil {
		b.timer.Stop()
	}
}
