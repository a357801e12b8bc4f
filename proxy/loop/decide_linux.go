//go:build linux

package loop

import (
	"cmp"
)

// A request whose Verdict says Decide waits for it on a goroutine of
// its own, its caller's connection unread (hold) and its head where it
// was read; Decide's Verdict comes back through the queue that dials
// use (post, adopt), and the loop goes on with it (decided) as it would
// have with Request's.

// decision is one Verdict.Decide in flight.
type decision struct {
	s       *side
	headLen int // the request head's length, in s.in from s.off
	// v is Decide's Verdict and key its Upstream's, or err why there is
	// none (Decide panicked); written by Decide's goroutine before post.
	v   Verdict
	key string
	err error
	// gone is why the pair ended while Decide ran (nil: it did not);
	// the loop's goroutine's.
	gone error
}

// deferDecision runs decide for the request whose head, headLen bytes
// at s.off, caller-facing side s read, on a goroutine of its own.
func (l *Loop) deferDecision(s *side, headLen int, decide func() Verdict) {
	d := &decision{s: s, headLen: headLen}
	s.x.deciding = d
	go func() {
		vk, err := guard(l, "Verdict.Decide", func() upstreamVerdict {
			v := decide()
			return upstreamVerdict{v, keyOf(v.Upstream)}
		})
		d.v, d.key, d.err = vk.v, vk.key, err
		l.post(d)
	}()
}

// upstreamVerdict is a Verdict and its Upstream's key, for guard.
type upstreamVerdict struct {
	v   Verdict
	key string
}

// post hands d back to the loop's goroutine; if that has stopped, d's
// Exchange is told ErrClosed here.
func (l *Loop) post(d *decision) {
	l.mu.Lock()
	if l.wakeGone {
		l.mu.Unlock()
		l.abandon(d, ErrClosed)
		return
	}
	l.decisions = append(l.decisions, d)
	l.npending.Add(1)
	l.mu.Unlock()
	l.wake()
}

// decided goes on with the request d was deciding: as request would
// have with its Verdict, then with the rest of what its caller sent.
func (l *Loop) decided(d *decision) {
	s := d.s
	switch {
	case d.gone != nil:
		l.abandon(d, d.gone)
		return
	case d.err != nil:
		s.x.deciding, s.x.awaiting = nil, false
		l.closePair(s, d.err)
		return
	}
	s.x.deciding = nil
	h := s.head
	l.proceed(s, h, d.v, d.key)
	if s.dead {
		return // handed off (at the head), or failed
	}
	s.off += d.headLen
	l.framed(s, h) // a request's framing: never an error
	l.relay(s)
}

// abandon tells the Exchange of d's Verdict, which the loop will not
// act on, that its exchange ended for err.
func (l *Loop) abandon(d *decision, err error) {
	if ex := d.v.Exchange; ex != nil {
		guard(l, "Exchange.Done", func() struct{} { ex.Done(0, cmp.Or(err, ErrHungUp)); return struct{}{} })
	}
}
