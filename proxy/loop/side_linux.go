//go:build linux

package loop

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
	"golang.org/x/sys/unix"
)

// side is one connection of a relayed pair, owned by the loop.
type side struct {
	fd   int // -1: an upstream not connected yet
	peer *side
	x    *exchange
	// isDown: this side faces the caller and reads requests; the other
	// faces the upstream and reads responses.
	isDown bool
	tc     *tls.Conn // nil on a plaintext side
	bc     *bufConn  // under tc
	in     []byte    // plaintext read; in[off:] not yet relayed
	off    int
	pend   []byte // plaintext staged for one tc.Write at flush (TLS sides)
	out    []byte // bytes for write(2)
	// framing of what this side reads
	state   int
	remain  int64
	discard bool // the body being read is dropped (its request was answered by the Handler)
	// loop bookkeeping
	dirty, pollOut, paused, closing, dead bool
	dialing, adopted                      bool // an upstream side: being dialed; in l.conns
	// deadline is when the loop gives up on a caller-facing side (zero:
	// never); heading: the deadline is a head's, begun and not whole.
	deadline time.Time
	heading  bool
	head     h1.Head // the last head read (a Head is too big for the stack of every relay)
	// owner is the caller's net.Conn, closed with the side; caller is
	// what a Handler sees of it.
	owner  net.Conn
	caller Caller
	// lastRead is when a caller-facing side last read bytes (the
	// batch's clock); bodyStart, bodyGot and bodyGraced measure the
	// body it is reading against Config.MinBodyRate: the window's start
	// (zero: none begun), the bytes read in it, the grace period spent.
	lastRead   time.Time
	bodyStart  time.Time
	bodyGot    int64
	bodyGraced bool
	// secure: the side speaks TLS (tc, once connected)
	secure bool
	// dialed is a dial's outcome, written by its goroutine before the
	// side is queued and read by adopt.
	dialed dialed
}

// dialed is what a dial of an upstream made.
type dialed struct {
	fd  int
	tc  *tls.Conn
	bc  *bufConn
	err error
}

// exchange is what the two sides of a pair share: the request in flight.
type exchange struct {
	awaiting bool // a request was relayed and its final response is not complete
	isHEAD   bool
	close    bool // end the pair once this exchange completes
	status   int  // the final response's status, once its head is read
	ex       Exchange
}

// done tells the exchange's Handler that it ended.
func (x *exchange) done(err error) {
	if ex := x.ex; ex != nil {
		x.ex = nil
		ex.Done(x.status, err)
	}
}

const (
	stHead = iota
	stBody
	stChunkSize
	stChunkData
	stChunkCRLF
	stTrailer
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
			if ev.Events&unix.EPOLLOUT != 0 {
				l.writeOut(s)
			}
			switch {
			case s.dead:
			case ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 && s.paused:
				// Reported even when not asked for: the socket is gone
				// both ways (or failed), and a held side would spin.
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
	l.mu.Unlock()
	if closing {
		for _, s := range p {
			if s.isDown {
				l.live++ // closeAll closes it
				l.setConn(s)
			} else if s.dialed.fd >= 0 {
				unix.Close(s.dialed.fd)
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
			if s.tc != nil {
				l.decrypt(s)
			}
		default: // a dialed upstream
			s.dialing = false
			switch {
			case s.peer.dead:
				if s.dialed.fd >= 0 {
					unix.Close(s.dialed.fd)
				}
			case s.dialed.err != nil:
				l.unreachable(s)
			default:
				d := s.dialed
				s.fd, s.tc, s.bc = d.fd, d.tc, d.bc
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
	if draining {
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
	l.mu.Unlock()
}

// ticks asks the loop to sweep every d, through its eventfd, until it
// stops.
func (l *Loop) ticks(d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-l.stopped:
			return
		case <-t.C:
			l.tick.Store(true)
			l.wake()
		}
	}
}

// sweep closes the pairs whose caller-facing side is past its deadline,
// silent past the read idle timeout, or sending a body too slowly.
func (l *Loop) sweep(now time.Time) {
	for _, s := range l.conns {
		switch {
		case s == nil || s.dead || !s.isDown:
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

// room returns b with at least readSize bytes of free capacity.
func room(b []byte) []byte {
	if cap(b)-len(b) >= readSize {
		return b
	}
	nb := make([]byte, len(b), 2*cap(b)+readSize)
	copy(nb, b)
	return nb
}

// readIn does one read(2) on a ready socket and relays what it can.
func (l *Loop) readIn(s *side) {
	buf := &s.in
	if s.tc != nil {
		if s.bc.r > 0 {
			s.bc.buf = s.bc.buf[:copy(s.bc.buf, s.bc.buf[s.bc.r:])]
			s.bc.r = 0
		}
		buf = &s.bc.buf
	} else {
		l.compact(s)
	}
	*buf = room(*buf)
	n, err := unix.Read(s.fd, (*buf)[len(*buf):cap(*buf)])
	if err == unix.EAGAIN || err == unix.EINTR {
		return
	}
	if err != nil || n == 0 {
		l.hangUp(s) // EOF or reset
		return
	}
	*buf = (*buf)[:len(*buf)+n]
	if s.isDown {
		s.lastRead = l.now
		if s.state != stHead {
			s.bodyGot += int64(n)
		}
	}
	if s.tc != nil {
		l.decrypt(s)
	} else {
		l.relay(s)
	}
}

// decrypt moves every complete TLS record of s's buffer into s.in and
// relays it.
func (l *Loop) decrypt(s *side) {
	l.compact(s)
	for {
		s.in = room(s.in)
		m, err := s.tc.Read(s.in[len(s.in):cap(s.in)])
		s.in = s.in[:len(s.in)+m]
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				// What came before a close_notify (crypto/tls returns it
				// with the last data) or a failed record goes on first.
				l.relay(s)
				if !s.dead {
					l.hangUp(s)
				}
				return
			}
			break
		}
		if m == 0 {
			break // only for an empty p, which room rules out
		}
	}
	l.relay(s)
}

func (l *Loop) compact(s *side) {
	if s.off == len(s.in) {
		s.in, s.off = s.in[:0], 0
	} else if s.off > 0 {
		s.in = s.in[:copy(s.in, s.in[s.off:])]
		s.off = 0
	}
}

// stage queues b to be sent on s at the end of the batch.
func (l *Loop) stage(s *side, b []byte) {
	*stageBuf(s) = append(*stageBuf(s), b...)
	l.markDirty(s)
}

// stageBuf is where plaintext for s is staged.
func stageBuf(s *side) *[]byte {
	if s.secure {
		return &s.pend
	}
	return &s.out
}

func (l *Loop) markDirty(s *side) {
	if !s.dirty {
		s.dirty = true
		l.dirty = append(l.dirty, s)
	}
}

// flush seals each dirty side's staged plaintext in one TLS record (or
// as many as 16 KiB records take) and writes it with one write(2). An
// upstream still being dialed keeps what is staged for it.
func (l *Loop) flush() {
	for _, s := range l.dirty {
		s.dirty = false
		if s.dead || !s.adopted {
			continue
		}
		if s.tc != nil && len(s.pend) > 0 {
			if _, err := s.tc.Write(s.pend); err != nil {
				l.closePair(s, ErrHungUp)
				continue
			}
			s.pend = s.pend[:0]
		}
		l.writeOut(s)
	}
	clear(l.dirty)
	l.dirty = l.dirty[:0]
}

// writeOut writes what s has queued, waits for EPOLLOUT when the socket
// is full, and holds s's peer while more than maxQueued waits.
func (l *Loop) writeOut(s *side) {
	if len(s.out) > 0 {
		n, err := unix.Write(s.fd, s.out)
		if err == unix.EAGAIN || err == unix.EINTR {
			n = 0
		} else if err != nil {
			l.closePair(s, ErrHungUp)
			return
		}
		s.out = s.out[:copy(s.out, s.out[n:])]
		if n > 0 && s.isDown && !s.heading {
			l.arm(s) // an answer still being sent: the idle timeout counts from its last progress
		}
	}
	l.setPoll(s, s.paused, len(s.out) > 0)
	l.hold(s.peer)
	if len(s.out) == 0 && s.closing {
		l.closePair(s, nil)
	}
}

// setPoll sets which events the loop waits for on s.
func (l *Loop) setPoll(s *side, paused, pollOut bool) {
	if s.dead || !s.adopted || (paused == s.paused && pollOut == s.pollOut) {
		return
	}
	s.paused, s.pollOut = paused, pollOut
	ev := unix.EpollEvent{Fd: int32(s.fd)}
	if !paused {
		ev.Events |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if pollOut {
		ev.Events |= unix.EPOLLOUT
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, s.fd, &ev); err != nil {
		l.closePair(s, ErrHungUp)
	}
}

// closePair closes both connections of s's pair; an exchange in flight
// is told err (ErrHungUp if nil).
func (l *Loop) closePair(s *side, err error) {
	if s.x.ex != nil {
		l.endExchange(s.x, cmp.Or(err, ErrHungUp))
	}
	for _, c := range []*side{s, s.peer} {
		if c.dead {
			continue
		}
		c.dead = true
		if c.isDown {
			l.live--
		}
		if c.fd >= 0 && (c.adopted || c.isDown) {
			unix.Close(c.fd) // also leaves the epoll set: this is the socket's only descriptor
			if c.adopted {
				l.conns[c.fd] = nil
			}
		}
		if c.owner != nil {
			c.owner.Close() // the caller's wrappers: its socket is closed already
		}
	}
}

// hangUp ends s's pair after s's peer closed or reset its connection.
// An upstream that ends between exchanges (its last answer whole, as a
// server ends a kept-alive connection, or after Connection: close) is
// closed alone: the caller gets what is queued for it, then a close.
func (l *Loop) hangUp(s *side) {
	down := s.peer
	if s.isDown || s.x.awaiting || down.dead {
		l.closePair(s, ErrHungUp)
		return
	}
	unix.Close(s.fd)
	l.conns[s.fd] = nil
	s.dead = true
	s.discardStaged()
	down.discard = true // the rest of a request body answered early has nowhere to go
	down.closing = true
	l.markDirty(down)
	l.hold(down)
}

// endExchange tells x's Handler the exchange ended.
func (l *Loop) endExchange(x *exchange, err error) { x.done(err) }

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
	down := s.peer
	s.dead = true // never adopted: nothing to close
	x := s.x
	x.status, x.awaiting = 502, false
	s.discardStaged()
	l.stage(down, l.cfg.BadGateway)
	l.endExchange(x, errors.Join(ErrUnreachable, s.dialed.err))
	down.closing = true
	l.hold(down)
}

// discardStaged drops what waits to be sent on s.
func (s *side) discardStaged() { s.pend, s.out = s.pend[:0], s.out[:0] }
