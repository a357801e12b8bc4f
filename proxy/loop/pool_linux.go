//go:build linux

package loop

import (
	"errors"
	"os"
	"slices"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
	"golang.org/x/sys/unix"
)

// The pool: an upstream connection belongs to a caller's pair only for
// an exchange. A pair's upstream side is one side for the pair's life;
// the connection moves between it and the pool's sides (sides whose
// pooled is set: no peer, no exchange), which are kept per key, the
// most recently used last.

// release moves the connection of up, an upstream side whose exchange
// just ended cleanly, to the pool, or closes it when it may not be
// reused: bytes unsent (an answer that came before its request was
// whole), its TLS closed, past its notAfter, or the loop draining. up becomes
// unconnected, ready for its caller's next request.
func (l *Loop) release(up *side) {
	down := up.peer
	if down.state != stHead || up.gone || len(up.out)+len(up.pend) > 0 ||
		!up.notAfter.IsZero() && !l.now.Before(up.notAfter) || l.maxIdle() <= 0 || l.drainSeen {
		l.resetUpstream(up)
		return
	}
	p := l.spare()
	*p = *up
	p.peer, p.x, p.pooled, p.dirty, p.idleSince = nil, nil, true, false, l.now
	p.in, p.off, p.ended = p.in[:0], 0, false
	if p.bc != nil {
		p.bc.out = &p.out
	}
	l.conns[p.fd] = p
	l.setPoll(p, false, false) // idle: read (a hang-up, stray bytes), nothing to write
	*up = side{fd: -1, peer: down, x: up.x, secure: up.secure, dirty: up.dirty, upstream: up.upstream, key: up.key}
	idle := append(l.idle[p.key], p)
	if len(idle) > l.maxIdle() {
		l.closeIdle(idle[0]) // the one idle longest
		idle = slices.Delete(idle, 0, 1)
	}
	l.idle[p.key] = idle
}

// takeIdle moves the most recently used idle connection for up's key
// into up, an unconnected upstream side (with what was staged for it
// kept), and reports whether there was one. Idle connections that may
// no longer be used are closed on the way.
func (l *Loop) takeIdle(up *side) bool {
	idle := l.idle[up.key]
	for len(idle) > 0 {
		p := idle[len(idle)-1]
		idle[len(idle)-1] = nil
		idle = idle[:len(idle)-1]
		// As proxy/h1.Client: not past its idle timeout or notAfter
		// (the sweep may be late). Bytes the upstream sent while it was
		// idle were seen before any request of this batch could take it
		// (run handles the pool's events first); a read here, finding
		// nothing, was a system call per request (bench/README.md,
		// session 29). Bytes sent after this batch's epoll_wait are
		// read as the next request's answer, as Envoy's codec would.
		if l.now.Sub(p.idleSince) > l.cfg.UpstreamIdleTimeout || !p.notAfter.IsZero() && !l.now.Before(p.notAfter) {
			l.closeIdle(p)
			continue
		}
		l.idle[up.key] = idle
		staged := *stageBuf(up)
		peer, x, dirty, u := up.peer, up.x, up.dirty, up.upstream
		*up = *p
		up.peer, up.x, up.pooled, up.dirty, up.upstream = peer, x, false, dirty, u
		if up.bc != nil {
			up.bc.out = &up.out
		}
		l.conns[up.fd] = up
		*stageBuf(up) = append(*stageBuf(up), staged...) // a Retrier's next upstream: the request waits
		*p = side{}
		if len(l.spares) < cap(l.spares) {
			l.spares = append(l.spares, p)
		}
		return true
	}
	l.idle[up.key] = idle
	return false
}

// restage moves what was staged for s while s.secure was wasSecure to
// where s stages now (a dial's outcome decides whether it is TLS).
func restage(s *side, wasSecure bool) {
	switch {
	case wasSecure == s.secure:
	case s.secure:
		s.pend, s.out = append(s.pend, s.out...), s.out[:0]
	default:
		s.out, s.pend = append(s.out, s.pend...), s.pend[:0]
	}
}

// spare is a side for the pool, reused if one was given back.
func (l *Loop) spare() *side {
	if n := len(l.spares); n > 0 {
		p := l.spares[n-1]
		l.spares[n-1] = nil
		l.spares = l.spares[:n-1]
		return p
	}
	return new(side)
}

func (l *Loop) maxIdle() int {
	switch n := l.cfg.MaxIdlePerUpstream; {
	case n == 0:
		return 64
	case n < 0:
		return 0
	default:
		return n
	}
}

// idleEvent handles readiness of p, an idle connection in the pool:
// one that hung up or sent anything leaves the pool, closed.
func (l *Loop) idleEvent(p *side) {
	if !l.idleRead(p) {
		l.unpool(p)
	}
}

// idleRead reads what p, an idle connection, has, and reports whether
// it may still carry a request: not if the upstream hung up (closed
// silently), nor if it sent anything (no request is in flight: the
// bytes are reported as proxy/h1.Client reports them, and must never be
// read as the next request's answer). Over TLS, records that carry no
// data (session tickets) leave it idle, and a close_notify is a
// hang-up.
func (l *Loop) idleRead(p *side) bool {
	buf := &p.in
	p.in = p.in[:0]
	if p.tc != nil {
		p.bc.buf = p.bc.buf[:copy(p.bc.buf, p.bc.buf[p.bc.r:])] // a record's beginning, kept
		p.bc.r = 0
		buf = &p.bc.buf
	}
	*buf = room(*buf)
	n, err := unix.Read(p.fd, (*buf)[len(*buf):cap(*buf)])
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return true
	case err != nil || n == 0:
		return false
	}
	*buf = (*buf)[:len(*buf)+n]
	if p.tc != nil {
		p.in = room(p.in[:0])
		m, err := p.tc.Read(p.in[:cap(p.in)])
		switch {
		case m > 0:
		case errors.Is(err, os.ErrDeadlineExceeded):
			return true // no data
		default:
			return false // close_notify, or a broken record
		}
	}
	l.protocolError(h1.ReasonUnsolicited)
	return false
}

// unpool takes p out of its key's idle list and closes it.
func (l *Loop) unpool(p *side) {
	idle := l.idle[p.key]
	if i := slices.Index(idle, p); i >= 0 {
		l.idle[p.key] = slices.Delete(idle, i, i+1)
	}
	l.closeIdle(p)
}

// closeIdle closes p, an idle connection already out of its list.
func (l *Loop) closeIdle(p *side) {
	unix.Close(p.fd)
	l.conns[p.fd] = nil
	if p.owner != nil {
		p.owner.Close()
	}
	*p = side{}
	if len(l.spares) < cap(l.spares) {
		l.spares = append(l.spares, p)
	}
}

// sweepIdle closes the idle connections unused for
// Config.UpstreamIdleTimeout or past their notAfter; all of them if
// every is set (Shutdown).
func (l *Loop) sweepIdle(now time.Time, every bool) {
	for key, idle := range l.idle {
		idle = slices.DeleteFunc(idle, func(p *side) bool {
			if every || now.Sub(p.idleSince) > l.cfg.UpstreamIdleTimeout || !p.notAfter.IsZero() && !now.Before(p.notAfter) {
				l.closeIdle(p)
				return true
			}
			return false
		})
		if len(idle) == 0 {
			delete(l.idle, key)
		} else {
			l.idle[key] = idle
		}
	}
}
