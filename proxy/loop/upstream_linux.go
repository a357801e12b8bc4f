//go:build linux

package loop

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
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
	case s.isDown || s.peer.dead:
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
	case x.status == 0 || x.answerMark >= 0:
		l.badGateway(s, ErrHungUp)
	default:
		l.closePair(s, ErrHungUp)
	}
}

// failResponse handles an upstream that broke HTTP/1.1's framing
// (Config.ProtocolError is told why): bytes after a whole answer or with
// no request close it alone, as a pooled client drops such a connection;
// a malformed answer before it began gets the caller BadGateway; within
// an answer, the answer is cut and the pair ends.
func (l *Loop) failResponse(s *side, err error) {
	x := s.x
	switch {
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
	*s = side{fd: -1, peer: s.peer, x: s.x, secure: s.secure, in: s.in[:0], pend: s.pend, out: s.out}
}

// badGateway answers the caller of upstream side s's exchange, which
// failed before its answer began, with Config.BadGateway, closes the
// upstream, and ends the caller's connection once the answer is sent.
func (l *Loop) badGateway(s *side, err error) {
	down, x := s.peer, s.x
	if x.answerMark >= 0 {
		*stageBuf(down) = (*stageBuf(down))[:x.answerMark] // the broken answer, never sent
		x.answerMark = -1
	}
	l.resetUpstream(s)
	x.status, x.awaiting = http.StatusBadGateway, false
	l.stage(down, l.cfg.BadGateway)
	l.endExchange(x, err)
	down.closing = true
	l.hold(down)
}

// endExchange tells x's Handler the exchange ended. A Done that panics
// is logged: it must not end the loop, and with it every connection.
func (l *Loop) endExchange(x *exchange, err error) {
	defer func() {
		if p := recover(); p != nil && l.cfg.Log != nil {
			l.cfg.Log.Error("loop: exchange's Done panicked", "error", fmt.Sprintf("panic: %v\n%s", p, debug.Stack()))
		}
	}()
	x.done(err)
}

// dial connects s, a pair's upstream side, on a goroutine of its own,
// and queues it for the loop to adopt.
func (l *Loop) dial(s *side) {
	s.dialing = true
	go func() {
		ctx, cancel := context.WithTimeout(l.ctx, l.cfg.DialTimeout)
		defer cancel()
		d := l.connect(ctx)
		if d.err != nil && l.cfg.Log != nil {
			l.cfg.Log.Warn("loop: upstream unreachable", "error", d.err)
		}
		s.dialed = d
		if !l.queue(s) && d.fd >= 0 {
			unix.Close(d.fd)
		}
	}()
}

// connect dials the upstream, does its TLS handshake if configured,
// and registers its socket.
func (l *Loop) connect(ctx context.Context) dialed {
	d := dialed{fd: -1}
	c, err := l.cfg.Dial(ctx)
	if err != nil {
		d.err = err
		return d
	}
	if l.cfg.UpstreamTLS != nil {
		d.bc = &bufConn{nc: c}
		d.tc = tls.Client(d.bc, l.cfg.UpstreamTLS)
		if err := d.tc.HandshakeContext(ctx); err != nil {
			c.Close()
			d.err = err
			return d
		}
		c.SetDeadline(time.Time{})
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
		d.err = err
		return d
	}
	d.fd = fd
	return d
}

// unreachable answers the exchange waiting on s, an upstream that could
// not be dialed, with BadGateway and ends the caller's connection.
func (l *Loop) unreachable(s *side) {
	l.badGateway(s, errors.Join(ErrUnreachable, s.dialed.err))
}

// discardStaged drops what waits to be sent on s.
func (s *side) discardStaged() { s.pend, s.out = s.pend[:0], s.out[:0] }
