//go:build linux

package loop

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
	"golang.org/x/sys/unix"
)

// hangUp handles s's peer closing or resetting s's connection. A caller
// that hangs up ends the pair. An upstream that ends between exchanges
// (as a server ends a kept-alive connection) is closed alone, and the
// caller's next request dials again; one that ends before the answer
// began gets the caller BadGateway; one that ends within an answer
// cuts it, and the pair ends.
func (l *Loop) hangUp(s *side) {
	switch x := s.x; {
	case s.isDown:
		l.closePair(s, ErrCallerHungUp)
	case s.peer.dead:
		l.closePair(s, ErrHungUp)
	case !x.awaiting:
		l.resetUpstream(s)
	case x.status == 0 && len(x.replay) > 0 && len(s.in) == s.off:
		// A kept connection closed under a request that may go again,
		// before any byte of its answer: once more, on a new one.
		again := x.replay
		x.replay = nil
		l.resetUpstream(s)
		l.stage(s, again)
		l.dial(s)
	case x.status == 0 && l.resendAfterReset(s):
		// Only before a final answer's head came: one that came was the
		// Resender's to judge (it was told its status), and the request
		// ran there; a hang-up within its body does not send it again.
	case x.status == 0 || x.answerMark >= 0:
		l.badGateway(s, ErrHungUp)
	default:
		l.closePair(s, ErrHungUp)
	}
}

// resendAfterReset asks the Resender of s's exchange, if any, whether a
// request whose upstream hung up before its answer began (status 0)
// goes again elsewhere, and sends it if so; it reports whether it did.
func (l *Loop) resendAfterReset(s *side) bool {
	x := s.x
	r, ok := x.ex.(Resender)
	if !ok || len(x.again) == 0 || s.peer.state != stHead {
		return false
	}
	if x.next, x.nextK = l.answered(r, 0, nil); x.next == nil {
		return false
	}
	l.resend(s)
	return true
}

// failResponse handles an upstream that broke HTTP/1.1's framing
// (Config.ProtocolError is told why): bytes after a whole answer or with
// no request close it alone, as a pooled client drops such a connection;
// a malformed answer before it began gets the caller BadGateway; within
// an answer, the answer is cut and the pair ends.
func (l *Loop) failResponse(s *side, err error) {
	x := s.x
	switch {
	case errors.Is(err, errResend):
		l.resend(s)
	case errors.Is(err, errBytesAfterResponse):
		l.protocolError(h1.ReasonBytesAfterResponse)
		l.resetUpstream(s)
	case errors.Is(err, errNoRequest):
		l.protocolError(h1.ReasonUnsolicited)
		l.resetUpstream(s)
	case x.awaiting && (x.status == 0 || x.answerMark >= 0):
		// Before the answer began, or with its head still unsent (a
		// broken chunk in the same read as the head, as proxy/h1's
		// client checks what it has buffered before it answers).
		l.protocolError(h1.ReasonMalformedResponse)
		l.badGateway(s, err)
	default:
		l.protocolError(h1.ReasonMalformedResponse)
		l.closePair(s, err)
	}
}

func (l *Loop) protocolError(reason string) {
	if l.cfg.ProtocolError != nil {
		l.cfg.ProtocolError(reason)
	}
}

// resetUpstream closes s, an upstream side, alone, and makes it new: the
// caller's next forwarded request dials again. What was staged for it is
// dropped (a request whose body broke never reaches the upstream when
// none of it was sent yet), and a caller still sending the body of an
// exchange that is over drops the rest. A side still being dialed keeps
// its dial.
func (l *Loop) resetUpstream(s *side) {
	s.discardStaged()
	if down := s.peer; down.state != stHead {
		down.discard = true
	}
	if !s.adopted {
		return
	}
	unix.Close(s.fd)
	l.conns[s.fd] = nil
	if s.owner != nil {
		s.owner.Close()
	}
	*s = side{fd: -1, peer: s.peer, x: s.x, secure: s.secure, in: s.in[:0], pend: s.pend, out: s.out, dirty: s.dirty, upstream: s.upstream, key: s.key, head: s.head}
}

// badGateway answers the caller of upstream side s's exchange, which
// failed before its answer began, with Config.BadGateway, closes the
// upstream, and ends the caller's connection once the answer is sent.
func (l *Loop) badGateway(s *side, err error) {
	l.answerFailed(s, l.cfg.BadGateway, http.StatusBadGateway, err)
}

// timeout ends the exchange of caller-facing side s, past its
// Verdict.Timeout: before its answer's head was sent, with the
// Verdict's TimeoutAnswer; after, by closing the pair.
func (l *Loop) timeout(s *side) {
	x := s.x
	if x.status != 0 && x.answerMark < 0 {
		l.closePair(s, ErrTimeout)
		return
	}
	l.answerFailed(s.peer, orAnswer(x.timeoutAnswer, gatewayTimeout), http.StatusGatewayTimeout, ErrTimeout)
}

// orAnswer is answer, or def if answer is nil.
func orAnswer(answer, def []byte) []byte {
	if answer == nil {
		return def
	}
	return answer
}

// answerFailed answers the caller of upstream side s's exchange, which
// failed before its answer's head was sent, with answer (status if it
// has none), closes the upstream, and ends the caller's connection once
// the answer is sent.
func (l *Loop) answerFailed(s *side, answer []byte, status int, err error) {
	down, x := s.peer, s.x
	if x.answerMark >= 0 {
		*stageBuf(down) = (*stageBuf(down))[:x.answerMark] // the broken answer, never sent
		x.answerMark = -1
	}
	l.resetUpstream(s)
	x.status, x.awaiting = cmp.Or(statusOf(answer), status), false
	l.stage(down, answer)
	l.endExchange(x, err)
	down.closing = true
	l.hold(down)
}

// endExchange tells x's Handler the exchange ended. A Done that panics
// is logged: it must not end the loop, and with it every connection.
func (l *Loop) endExchange(x *exchange, err error) {
	// The request's copy (Resender) is over with it: a large one is let
	// go, or an idle connection would hold it for its life.
	x.again, x.next = x.again[:0], nil
	if cap(x.again) > maxKeptCopy {
		x.again = nil
	}
	guard(l, "Exchange.Done", func() struct{} { x.done(err); return struct{}{} })
}

// maxKeptCopy is the most of a request's copy (exchange.again) a
// caller's connection keeps between its exchanges, for its next one.
const maxKeptCopy = 16 << 10

// dial connects s, a pair's upstream side, to s.upstream on a
// goroutine of its own, and queues it for the loop to adopt.
func (l *Loop) dial(s *side) {
	s.dialing = true
	u := s.upstream
	go func() {
		ctx, cancel := context.WithTimeout(l.ctx, l.cfg.DialTimeout)
		defer cancel()
		d := l.connect(ctx, u)
		if d.err != nil && l.cfg.Log != nil {
			l.cfg.Log.Warn("loop: upstream unreachable", "error", d.err)
		}
		s.dialed = d
		if !l.queue(s) {
			d.drop()
		}
	}()
}

// errNoDial is a request for Config.Dial's upstream when there is none.
var errNoDial = errors.New("loop: no upstream: the Verdict names none and Config.Dial is nil")

// connect dials u (nil: Config.Dial), does its TLS handshake if asked,
// and registers its socket.
func (l *Loop) connect(ctx context.Context, u Upstream) dialed {
	d := dialed{fd: -1}
	var c net.Conn
	var cfg *tls.Config
	var err error
	switch {
	case u != nil:
		c, cfg, d.notAfter, err = l.upstreamDial(ctx, u)
	case l.cfg.Dial != nil:
		c, err = l.cfg.Dial(ctx)
		cfg = l.cfg.UpstreamTLS
	default:
		err = errNoDial
	}
	if err == nil && c == nil {
		err = errors.New("loop: Dial returned no connection")
	}
	if err != nil {
		d.err = err
		return d
	}
	if cfg != nil {
		d.bc = &bufConn{nc: c}
		d.tc = tls.Client(d.bc, cfg)
		if err := d.tc.HandshakeContext(ctx); err != nil {
			c.Close()
			d.err = err
			return d
		}
		c.SetDeadline(time.Time{})
		if certs := d.tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			if na := certs[0].NotAfter; d.notAfter.IsZero() || na.Before(d.notAfter) {
				d.notAfter = na
			}
		}
	}
	fd, err := takeFD(c)
	if err != nil {
		c.Close()
		d.err = err
		return d
	}
	if d.bc != nil {
		d.bc.nc = nil // from now on the loop's buffers
	}
	if err := l.register(fd); err != nil {
		unix.Close(fd)
		c.Close()
		d.err = err
		return d
	}
	d.fd, d.owner = fd, c
	return d
}

// upstreamDial is u.Dial; one that panics fails the dial, not the
// process (it runs on a goroutine of its own).
func (l *Loop) upstreamDial(ctx context.Context, u Upstream) (net.Conn, *tls.Config, time.Time, error) {
	type dialedConn struct {
		c        net.Conn
		cfg      *tls.Config
		notAfter time.Time
		err      error
	}
	d, err := guard(l, "Upstream.Dial", func() (d dialedConn) {
		d.c, d.cfg, d.notAfter, d.err = u.Dial(ctx)
		return d
	})
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	return d.c, d.cfg, d.notAfter, d.err
}

// unreachable handles s, an upstream side that could not be dialed: an
// exchange that is a Retrier, with no byte of its request sent, may
// name another upstream (taken from the pool, or dialed); else the
// caller gets the Verdict's Unreachable (or BadGateway) and its
// connection ends.
func (l *Loop) unreachable(s *side) {
	x, err := s.x, s.dialed.err
	if !x.awaiting {
		return // the exchange ended while it was dialed (its request failed)
	}
	if r, ok := x.ex.(Retrier); ok && !x.wrote {
		if next, key := l.retry(r, s.upstream, err); next != nil && !s.dead {
			s.upstream, s.key = next, key
			l.attemptAfterBackoff(s)
			return
		}
		if s.dead {
			return
		}
	}
	answer := orAnswer(x.unreachable, l.cfg.BadGateway)
	if a, ok := x.ex.(UnreachableAnswerer); ok {
		if b := l.unreachableAnswer(a, err); b != nil {
			answer = b
		}
	}
	l.answerFailed(s, answer, http.StatusBadGateway, errors.Join(ErrUnreachable, err))
}

// unreachableAnswer is a's answer for err; nil (the Verdict's) if a
// panics (logged).
func (l *Loop) unreachableAnswer(a UnreachableAnswerer, err error) []byte {
	answer, _ := guard(l, "UnreachableAnswerer.UnreachableAnswer", func() []byte { return a.UnreachableAnswer(err) })
	return answer
}

// retry asks r where up's request goes next, and that Upstream's key;
// a Retrier (or Upstream.Key) that panics gives up (logged).
func (l *Loop) retry(r Retrier, up Upstream, err error) (next Upstream, key string) {
	n, _ := guard(l, "Retrier.Unreachable", func() upstreamKey { return withKey(r.Unreachable(up, err)) })
	return n.up, n.key
}

// errResend: a Resender named another upstream for the answer's
// request (response); not a failure of the upstream.
var errResend = errors.New("loop: the request goes again elsewhere")

// answered asks r where the request answered with status goes next,
// and that Upstream's key; a Resender (or Upstream.Key) that panics
// keeps the answer (logged).
func (l *Loop) answered(r Resender, status int, head *h1.Head) (next Upstream, key string) {
	n, _ := guard(l, "Resender.Answered", func() upstreamKey { return withKey(r.Answered(status, head)) })
	return n.up, n.key
}

// resend sends the request of upstream side s's exchange again, to the
// Upstream its Resender named: the answer that came is dropped with its
// connection (its body unread), and the request's head goes on a pooled
// connection of the new upstream or a new one.
func (l *Loop) resend(s *side) {
	x := s.x
	next, key := x.next, x.nextK
	x.next, x.nextK = nil, ""
	if x.answerMark >= 0 {
		*stageBuf(s.peer) = (*stageBuf(s.peer))[:x.answerMark] // a broken answer's head, never sent
	}
	x.status, x.answerMark, x.wrote = 0, -1, false
	l.resetUpstream(s)
	s.upstream, s.key = next, key
	l.stage(s, x.again)
	l.attemptAfterBackoff(s)
}

// attemptAfterBackoff sends what is staged on upstream side s, a new
// attempt at its exchange's request, once the exchange's Backoffer (if
// any) says: now (attempt), or at the first sweep past the wait
// (exchange.againAt; the caller's bytes go on being staged meanwhile).
func (l *Loop) attemptAfterBackoff(s *side) {
	x := s.x
	if b, ok := x.ex.(Backoffer); ok {
		if d := l.backoff(b); d > 0 {
			x.againAt = l.cfg.Now().Add(d)
			l.timed()
			return
		}
	}
	l.attempt(s)
}

// attempt sends what is staged on upstream side s, which has no
// connection, on a pooled connection of its upstream or a new one.
func (l *Loop) attempt(s *side) {
	s.x.againAt = time.Time{}
	if l.takeIdle(s) {
		l.markDirty(s)
	} else {
		l.dial(s)
	}
}

// backoff is b's wait before the next attempt; none if b panics
// (logged).
func (l *Loop) backoff(b Backoffer) time.Duration {
	d, _ := guard(l, "Backoffer.Backoff", b.Backoff)
	return d
}

// discardStaged drops what waits to be sent on s.
func (s *side) discardStaged() { s.pend, s.out = s.pend[:0], s.out[:0] }
