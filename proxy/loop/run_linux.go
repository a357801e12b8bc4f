//go:build linux

package loop

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// run serves the epoll set until Close.
func (l *Loop) run() {
	defer close(l.stopped)
	for {
		n, err := l.wait()
		l.now = l.cfg.Now()
		// The eventfd is reset before the queue is read, never after: a
		// side queued while the batch is handled writes it again, and
		// the next wait returns at once (reset after adopt, that wakeup
		// was lost and the side waited for some other event).
		tick := false
		for _, ev := range l.events[:n] {
			if int(ev.Fd) == l.wakefd {
				var b [8]byte
				unix.Read(l.wakefd, b[:])
				tick = l.tick.Swap(false)
				if l.idleGone.Swap(false) {
					l.sweepIdle(l.now, true)
				}
			}
		}
		if l.npending.Load() > 0 {
			if l.adopt() {
				l.closeAll()
				return
			}
		}
		if err != nil {
			if l.cfg.Log != nil {
				l.cfg.Log.Error("loop: epoll_wait failed: closing every connection", "error", err)
			}
			l.closeAll()
			return
		}
		// The pool's idle connections first: one that hung up or sent
		// anything is closed before a request of this batch may take it.
		for _, ev := range l.events[:n] {
			if fd := int(ev.Fd); fd != l.wakefd && fd < len(l.conns) {
				if s := l.conns[fd]; s != nil && s.pooled {
					l.idleEvent(s)
				}
			}
		}
		for _, ev := range l.events[:n] {
			if int(ev.Fd) == l.wakefd {
				if tick {
					l.sweep(l.now)
				}
				continue
			}
			if int(ev.Fd) >= len(l.conns) {
				continue // not adopted yet: reported again (register queues it right after)
			}
			s := l.conns[ev.Fd]
			if s == nil || s.dead {
				continue
			}
			if s.pooled {
				continue // handled above
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				l.writeOut(s)
			}
			switch {
			case s.dead:
			case ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 && s.paused:
				// Reported even when not asked for: the socket is gone
				// both ways (or failed), and a held side would spin.
				l.hangUp(s)
			case ev.Events&unix.EPOLLRDHUP != 0 && s.paused:
				// Asked for while a Decide runs (setPoll): the caller
				// sends no more, and so cannot go on.
				l.hangUp(s)
			case ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && !s.paused:
				l.readIn(s)
			}
		}
		l.flush()
		l.nlive.Store(int64(l.live))
		l.checkDrained()
	}
}

// wait returns the number of ready events of the epoll set, stored in
// l.events, once there is at least one; until then the goroutine is
// parked in Go's poller (rc is the epoll descriptor's), never in
// epoll_wait.
func (l *Loop) wait() (int, error) {
	var n int
	var werr error
	err := l.rc.Read(func(uintptr) bool {
		for {
			n, werr = unix.EpollWait(l.epfd, l.events, 0)
			if werr != unix.EINTR {
				return n > 0 || werr != nil
			}
		}
	})
	if err == nil && werr != nil {
		err = os.NewSyscallError("epoll_wait", werr)
	}
	return n, err
}

// adopt takes the queued sides into the loop; it reports whether the
// loop is to close.
func (l *Loop) adopt() (closing bool) {
	l.mu.Lock()
	p := l.pending
	l.pending = nil
	l.npending.Store(0)
	draining, closing := l.draining, l.closing
	var ds []*decision
	if !closing { // else closeAll abandons them
		ds, l.decisions = l.decisions, nil
	}
	l.mu.Unlock()
	if closing {
		for _, s := range p {
			if s.isDown {
				l.live++ // closeAll closes it
				l.setConn(s)
			} else {
				s.dialed.drop()
			}
		}
		return true
	}
	now := l.cfg.Now()
	for _, s := range p {
		switch {
		case s.isDown:
			l.live++
			l.setConn(s)
			s.lastRead = now
			s.deadline, s.heading = l.headerDeadline(now), true // the first head, from the connection's start
			switch {
			case s.tc != nil:
				l.decrypt(s)
			case len(s.in) > 0:
				l.relay(s) // read before Take (PlainWith)
			}
		default: // a dialed upstream
			s.dialing = false
			switch {
			case s.peer.dead:
				s.dialed.drop()
			case s.dialed.err != nil:
				l.unreachable(s)
			default:
				d := s.dialed
				s.fd, s.tc, s.bc, s.notAfter, s.owner = d.fd, d.tc, d.bc, d.notAfter, d.owner
				wasSecure := s.secure
				s.secure = s.tc != nil
				restage(s, wasSecure) // whether it speaks TLS is known only now
				if s.bc != nil {
					s.bc.out = &s.out
				}
				l.setConn(s)
				l.markDirty(s) // what was staged while it was dialed
				if s.tc != nil {
					l.decrypt(s) // the handshake may have left data inside crypto/tls
				}
			}
		}
	}
	for _, d := range ds {
		l.decided(d)
	}
	if draining {
		l.drainSeen = true
		l.drain()
	}
	return false
}

func (l *Loop) setConn(s *side) {
	for s.fd >= len(l.conns) {
		l.conns = append(l.conns, nil)
	}
	l.conns[s.fd], s.adopted = s, true
}

// drain ends every pair with no exchange in flight once what is queued
// for its caller is sent (no further request is read, nor the rest of
// the body of one already answered), and has the others end when theirs
// is answered.
func (l *Loop) drain() {
	l.sweepIdle(l.now, true)
	for _, s := range l.conns {
		if s == nil || s.dead || !s.isDown {
			continue
		}
		if s.x.awaiting {
			s.x.close = true
			continue
		}
		s.closing = true
		l.markDirty(s) // flush closes it once its queue is empty
		l.hold(s)
	}
}

// checkDrained signals Shutdown once it has begun and no pair is left.
func (l *Loop) checkDrained() {
	if l.live > 0 {
		return
	}
	l.mu.Lock()
	draining := l.draining
	l.mu.Unlock()
	if draining {
		select {
		case <-l.drained:
		default:
			close(l.drained)
		}
	}
}

// closeAll closes every pair and the loop's descriptors.
func (l *Loop) closeAll() {
	l.sweepIdle(l.now, true)
	for _, s := range l.conns {
		if s != nil && !s.dead {
			l.closePair(s, ErrClosed)
		}
	}
	l.cancel() // dials in flight
	l.epf.Close()
	l.mu.Lock()
	l.wakeGone = true
	unix.Close(l.wakefd)
	ds := l.decisions // posted since the last adopt; later ones post abandons
	l.decisions = nil
	l.mu.Unlock()
	for _, d := range ds {
		l.abandon(d, ErrClosed)
	}
}

// ticks asks the loop to sweep at each of l.ticker's ticks, through its
// eventfd, until it stops.
func (l *Loop) ticks() {
	defer l.ticker.Stop()
	for {
		select {
		case <-l.stopped:
			return
		case <-l.ticker.C:
			l.tick.Store(true)
			l.wake()
		}
	}
}

// sweep sends the attempts whose Backoffer's wait is over; closes the
// pairs whose caller-facing side is past its deadline, silent past the
// read idle timeout, or sending a body too slowly; ends the exchanges
// past their Verdict.Timeout; and closes the idle upstream connections
// past theirs.
func (l *Loop) sweep(now time.Time) {
	l.sweepIdle(now, false)
	timed := false
	for _, s := range l.conns {
		if s == nil || s.dead || !s.isDown {
			continue
		}
		if s.x.awaiting && !s.x.againAt.IsZero() {
			if !now.Before(s.x.againAt) {
				l.attempt(s.peer)
			} else {
				timed = true
			}
		}
		if s.x.awaiting && !s.x.timeoutAt.IsZero() {
			if !now.Before(s.x.timeoutAt) {
				l.timeout(s)
			} else {
				timed = true
			}
		}
		switch {
		case s.dead: // the timeout ended the pair
		case !s.deadline.IsZero() && now.After(s.deadline):
			l.closePair(s, os.ErrDeadlineExceeded)
		case l.cfg.ReadIdleTimeout > 0 && now.Sub(s.lastRead) > l.cfg.ReadIdleTimeout:
			l.closePair(s, ErrIdle)
		case l.cfg.MinBodyRate > 0 && s.state != stHead:
			if !l.bodyRateKept(s, now) {
				l.closePair(s, ErrBodyTooSlow)
			}
		}
	}
	if l.fast && !timed {
		l.fast = false
		l.ticker.Reset(l.tickBase)
	}
}

// timed has the sweep run every fastTick from now, for an exchange with
// a Verdict.Timeout or a Backoffer's wait.
func (l *Loop) timed() {
	if !l.fast && l.tickBase > fastTick {
		l.fast = true
		l.ticker.Reset(fastTick)
	}
}

// bodyRateKept measures the body caller-facing side s is reading
// against MinBodyRate, a window at a time, and reports whether it keeps
// up. A window in which s was held back starts again.
func (l *Loop) bodyRateKept(s *side, now time.Time) bool {
	switch {
	case s.bodyStart.IsZero() || s.paused:
		s.bodyStart, s.bodyGot = now, 0
	case now.Sub(s.bodyStart) >= l.cfg.BodyRateWindow:
		want := l.cfg.MinBodyRate * int64(l.cfg.BodyRateWindow) / int64(time.Second)
		if s.bodyGraced && s.bodyGot < want {
			return false
		}
		s.bodyGraced, s.bodyStart, s.bodyGot = true, now, 0
	}
	return true
}

func (l *Loop) headerDeadline(now time.Time) time.Time {
	if l.cfg.HeaderTimeout <= 0 {
		return time.Time{}
	}
	return now.Add(l.cfg.HeaderTimeout)
}

// arm sets caller-facing side s's deadline after it read or finished an
// exchange: none while an exchange is in flight; the header timeout
// from the first byte of a head; else the idle timeout from now.
func (l *Loop) arm(s *side) {
	switch {
	case s.x.awaiting || s.state != stHead:
		s.deadline, s.heading = time.Time{}, false
	case s.off < len(s.in):
		if !s.heading {
			s.deadline, s.heading = l.headerDeadline(l.now), true
		}
	case l.cfg.IdleTimeout > 0:
		s.deadline, s.heading = l.now.Add(l.cfg.IdleTimeout), false
	default:
		s.deadline, s.heading = time.Time{}, false
	}
}
