//go:build linux

package loop

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// backoffResender is a resender that has the loop wait wait before the
// attempt it names.
type backoffResender struct {
	*resender
	wait time.Duration
}

func (b *backoffResender) Backoff() time.Duration { return b.wait }

// backoffRetrier is a retrier that has the loop wait wait before the
// attempt it names.
type backoffRetrier struct {
	*retrier
	wait time.Duration
}

func (b *backoffRetrier) Backoff() time.Duration { return b.wait }

// TestBackoff: the attempt a Backoffer's Resender or Retrier names goes
// only once its Backoff is over, and goes then; a Verdict.Timeout that
// comes first ends the exchange, and the attempt never goes.
func TestBackoff(t *testing.T) {
	const wait = 150 * time.Millisecond
	var failing, healthy atomic.Int32
	bad := &testUpstream{key: "bad", addr: statusServer(t, "bad", 503, &failing)}
	good := &testUpstream{key: "good", addr: statusServer(t, "good", 200, &healthy)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := &testUpstream{key: "down", addr: ln.Addr().String()}
	ln.Close()

	t.Run("resend", func(t *testing.T) {
		f := start(t, Config{Handler: handlerFunc(func(*Caller, *h1.Head) Verdict {
			r := &resender{status: 503, next: good, done: make(chan int, 1)}
			return Verdict{Upstream: bad, Exchange: &backoffResender{resender: r, wait: wait}}
		})}, "", false)
		began := time.Now()
		status, body := f.caller().get("/again")
		if took := time.Since(began); took < wait {
			t.Errorf("answered after %v, before the backoff of %v was over", took, wait)
		}
		if status != 200 || body != "good /again " {
			t.Errorf("got %d %q, want good's answer", status, body)
		}
	})
	t.Run("retrier", func(t *testing.T) {
		r := &retrier{exchangeRec: newExchange(), asked: make(chan Upstream, 4), next: good}
		f := start(t, Config{Handler: handlerFunc(func(*Caller, *h1.Head) Verdict {
			return Verdict{Upstream: down, Exchange: &backoffRetrier{retrier: r, wait: wait}}
		})}, "", false)
		began := time.Now()
		status, body := f.caller().get("/retried")
		if took := time.Since(began); took < wait {
			t.Errorf("answered after %v, before the backoff of %v was over", took, wait)
		}
		if status != 200 || body != "good /retried " {
			t.Errorf("got %d %q, want good's answer", status, body)
		}
	})
	t.Run("timeout-first", func(t *testing.T) {
		before := healthy.Load()
		ex := newExchange()
		r := &resender{status: 503, next: good, done: make(chan int, 1)}
		f := start(t, Config{Handler: handlerFunc(func(*Caller, *h1.Head) Verdict {
			return Verdict{Upstream: bad, Exchange: &timedBackoff{backoffResender: backoffResender{resender: r, wait: time.Hour}, rec: ex},
				Timeout: 100 * time.Millisecond}
		})}, "", false)
		c := f.caller()
		if status, _ := c.get("/late"); status != 504 {
			t.Errorf("got %d, want the timeout's 504", status)
		}
		if d := ex.await(t); d.status != 504 || d.err == nil {
			t.Errorf("Done(%d, %v), want 504 and ErrTimeout", d.status, d.err)
		}
		expectEOF(t, c.br)
		if n := healthy.Load(); n != before {
			t.Errorf("the attempt went after the timeout (%d requests)", n-before)
		}
	})
}

// timedBackoff is a backoffResender whose end is recorded in rec.
type timedBackoff struct {
	backoffResender
	rec *exchangeRec
}

func (b *timedBackoff) Done(status int, err error) { b.rec.Done(status, err) }
