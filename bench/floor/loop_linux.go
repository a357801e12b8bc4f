//go:build linux

package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The -loop data path: the experiment of issue 17 ("read only when the
// socket is ready"). Connections are accepted, dialed and TLS-handshaken
// by goroutines on Go's poller as usual; then their sockets move to an
// epoll instance of the loop's own (level-triggered), and one goroutine
// does all the forwarding: for every ready socket one read(2) into the
// connection's buffer, crypto/tls decrypting from that buffer (a
// tls.Conn over bufConn, which answers "deadline exceeded" when it has
// no more bytes, an error crypto/tls treats as retryable), every
// complete message relayed, and at the end of each batch of events one
// TLS record and one write(2) per connection with something to send.
// No read finds an empty socket and no goroutine is woken per read.
//
// The loop itself never blocks in epoll_wait: its epoll descriptor is
// registered with Go's poller, so when nothing is ready the goroutine
// parks in the scheduler like any other and the thread is free.
//
// Each accepted connection gets its own upstream connection, dialed
// when it is accepted (the floor's pooled client reaches the same shape
// under the bench's keep-alive load).

// readSize is the free room made before each read(2), in bytes: a whole
// TLS record (16 KiB plus overhead) fits.
const readSize = 17 << 10

// maxQueued bounds what waits unsent for one connection, or unrelayed
// from it, before the loop stops reading its peer (or it), in bytes.
const maxQueued = 1 << 20

// handshakeTimeout bounds a TLS handshake and a dial, as proxy/h1's
// header timeout bounds a request head.
const handshakeTimeout = 10 * time.Second

// side is one connection of a forwarded pair, owned by the loop.
type side struct {
	fd   int
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
	state  int
	remain int64
	// loop bookkeeping
	dirty, pollOut, paused, closing, dead bool
	// deadline is when the loop gives up on a caller-facing side (zero:
	// never); heading: the deadline is a head's, begun and not whole.
	deadline time.Time
	heading  bool
}

// exchange is what the two sides of a pair share: the request in flight.
type exchange struct {
	awaiting bool // a request was relayed and its final response is not complete
	isHEAD   bool
	close    bool // end the pair once this exchange completes
}

const (
	stHead = iota
	stBody
	stChunkSize
	stChunkData
	stChunkCRLF
	stTrailer
)

// bufConn is the net.Conn under a loop-owned tls.Conn. Until the
// handshake is done it reads and writes the socket through Go's poller
// (nc); after that, reads take the bytes the loop read into buf, and
// writes append to the side's out.
type bufConn struct {
	nc  net.Conn
	buf []byte
	r   int
	s   *side
}

func (b *bufConn) Read(p []byte) (int, error) {
	if b.nc != nil {
		return b.nc.Read(p)
	}
	if b.r == len(b.buf) {
		return 0, os.ErrDeadlineExceeded // crypto/tls keeps what it has and returns; the loop reads more
	}
	n := copy(p, b.buf[b.r:])
	b.r += n
	if b.r == len(b.buf) {
		b.buf, b.r = b.buf[:0], 0
	}
	return n, nil
}

func (b *bufConn) Write(p []byte) (int, error) {
	if b.nc != nil {
		return b.nc.Write(p)
	}
	b.s.out = append(b.s.out, p...)
	return len(p), nil
}

func (b *bufConn) Close() error {
	if b.nc != nil {
		return b.nc.Close()
	}
	return nil
}

func (b *bufConn) LocalAddr() net.Addr                { return nil }
func (b *bufConn) RemoteAddr() net.Addr               { return nil }
func (b *bufConn) SetDeadline(t time.Time) error      { return b.setDeadline(t) }
func (b *bufConn) SetReadDeadline(t time.Time) error  { return b.setDeadline(t) }
func (b *bufConn) SetWriteDeadline(t time.Time) error { return b.setDeadline(t) }
func (b *bufConn) setDeadline(t time.Time) error {
	if b.nc != nil {
		return b.nc.SetDeadline(t)
	}
	return nil
}

// loop owns the forwarded sockets after their handshakes.
type loop struct {
	to       timeouts
	now      func() time.Time
	tick     atomic.Bool // set by ticks: sweep for connections past their deadline
	epfd     int
	wakefd   int // an eventfd in the epoll set: add writes it
	rc       syscall.RawConn
	events   []unix.EpollEvent
	conns    []*side // by fd
	dirty    []*side
	mu       sync.Mutex
	pending  []*side
	npending atomic.Int32
}

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("floor: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		return nil, fmt.Errorf("floor: epoll fd nonblocking: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("floor: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		return nil, fmt.Errorf("floor: epoll_ctl add eventfd: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll") // registered with Go's poller: nonblocking
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("floor: epoll fd: %w", err)
	}
	return &loop{epfd: epfd, wakefd: wakefd, rc: rc, events: make([]unix.EpollEvent, 256)}, nil
}

// runLoop serves ln with the -loop data path until Accept fails. In
// client mode downstream connections are plain and upstream ones mTLS
// (cfg); in server mode the reverse.
func runLoop(mode string, ln net.Listener, cfg *tls.Config, upstream string, to timeouts) error {
	l, err := newLoop()
	if err != nil {
		return err
	}
	l.to, l.now = to, time.Now
	go l.run()
	go l.ticks(min(max(min(to.header, to.idle)/4, 10*time.Millisecond), time.Second))
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			if err := l.open(mode, c, cfg, upstream); err != nil {
				log.Printf("floor: %v", err)
			}
		}()
	}
}

// open does the TLS handshake on the mTLS side and dials the upstream
// (in server mode the caller is authenticated before the app is dialed),
// then hands both sockets to the loop.
func (l *loop) open(mode string, c net.Conn, cfg *tls.Config, upstream string) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	var u net.Conn
	defer func() {
		if err != nil {
			c.Close()
			if u != nil {
				u.Close()
			}
		}
	}()
	down := &side{isDown: true, x: &exchange{}}
	up := &side{peer: down, x: down.x}
	down.peer = up
	handshake := func(s *side, raw net.Conn, tc func(net.Conn, *tls.Config) *tls.Conn) error {
		s.bc = &bufConn{nc: raw, s: s}
		s.tc = tc(s.bc, cfg)
		if err := s.tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		raw.SetDeadline(time.Time{})
		s.bc.nc = nil // from now on the loop's buffers
		return nil
	}
	if mode == "server" {
		if err := handshake(down, c, tls.Server); err != nil {
			return err
		}
	}
	var d net.Dialer
	if u, err = d.DialContext(ctx, "tcp", upstream); err != nil {
		return fmt.Errorf("dial %s: %w", upstream, err)
	}
	if mode == "client" {
		if err := handshake(up, u, tls.Client); err != nil {
			return err
		}
	}
	if down.fd, err = takeFD(c); err != nil {
		return err
	}
	if up.fd, err = takeFD(u); err != nil {
		unix.Close(down.fd)
		return err
	}
	return l.add(down, up)
}

// takeFD moves c's socket out of Go's poller: it duplicates the
// descriptor (the socket stays nonblocking) and closes c.
func takeFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("floor: %T has no descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, fmt.Errorf("floor: dup: %w", err)
	}
	c.Close()
	return fd, nil
}

// add registers a pair's sockets and queues the pair for the loop,
// which adopts queued pairs before it handles events. The sockets are in
// the epoll set before the loop can adopt them (it changes their events
// once it has); an event that comes before the adoption is reported
// again, level-triggered.
func (l *loop) add(down, up *side) error {
	for _, s := range []*side{down, up} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(s.fd)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
			unix.Close(down.fd)
			unix.Close(up.fd)
			return fmt.Errorf("floor: epoll_ctl add: %w", err)
		}
	}
	l.mu.Lock()
	l.pending = append(l.pending, down, up)
	l.npending.Add(1)
	l.mu.Unlock()
	// Wake the loop even if neither socket becomes readable: the
	// handshake may have left application data inside crypto/tls.
	if _, err := unix.Write(l.wakefd, []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil && err != unix.EAGAIN {
		return fmt.Errorf("floor: waking the loop: %w", err)
	}
	return nil
}

func (l *loop) adopt() {
	l.mu.Lock()
	p := l.pending
	l.pending = nil
	l.npending.Store(0)
	l.mu.Unlock()
	now := l.now()
	for _, s := range p {
		for s.fd >= len(l.conns) {
			l.conns = append(l.conns, nil)
		}
		l.conns[s.fd] = s
		if s.isDown {
			s.deadline, s.heading = now.Add(l.to.header), true // the first head, from the connection's start
		}
	}
	for _, s := range p {
		if s.tc != nil && !s.dead {
			l.decrypt(s)
		}
	}
}

// wait returns the number of ready events of epfd, stored in events,
// once there is at least one; until then the goroutine is parked in Go's
// poller (rc is epfd's), never in epoll_wait. An error of either ends
// the floor.
func wait(rc syscall.RawConn, epfd int, events []unix.EpollEvent) int {
	var n int
	var werr error
	err := rc.Read(func(uintptr) bool {
		for {
			n, werr = unix.EpollWait(epfd, events, 0)
			if werr != unix.EINTR {
				return n > 0 || werr != nil
			}
		}
	})
	if err = cmp.Or(err, werr); err != nil {
		log.Fatalf("floor: epoll_wait: %v", err)
	}
	return n
}

func (l *loop) run() {
	for {
		n := wait(l.rc, l.epfd, l.events)
		if l.npending.Load() > 0 {
			l.adopt()
		}
		for _, ev := range l.events[:n] {
			if int(ev.Fd) == l.wakefd {
				var b [8]byte
				unix.Read(l.wakefd, b[:]) // reset the counter: adopt has run
				if l.tick.Swap(false) {
					l.sweep(l.now())
				}
				continue
			}
			if int(ev.Fd) >= len(l.conns) {
				continue // not adopted yet: reported again (add queues it right after registering it)
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
				l.closePair(s)
			case ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && !s.paused:
				l.readIn(s)
			}
		}
		l.flush()
	}
}

// ticks asks the loop to sweep every d, through its eventfd.
func (l *loop) ticks(d time.Duration) {
	for range time.Tick(d) {
		l.tick.Store(true)
		unix.Write(l.wakefd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

// sweep closes the pairs whose caller-facing side is past its deadline.
func (l *loop) sweep(now time.Time) {
	for _, s := range l.conns {
		if s != nil && !s.dead && s.isDown && !s.deadline.IsZero() && now.After(s.deadline) {
			l.closePair(s)
		}
	}
}

// arm sets caller-facing side s's deadline after it read or finished an
// exchange: none while an exchange is in flight; the header timeout
// from the first byte of a head; else the idle timeout from now.
func (l *loop) arm(s *side) {
	switch {
	case s.x.awaiting:
		s.deadline, s.heading = time.Time{}, false
	case s.off < len(s.in):
		if !s.heading {
			s.deadline, s.heading = l.now().Add(l.to.header), true
		}
	default:
		s.deadline, s.heading = l.now().Add(l.to.idle), false
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
func (l *loop) readIn(s *side) {
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
		l.closePair(s) // EOF or reset: the prototype ends both connections
		return
	}
	*buf = (*buf)[:len(*buf)+n]
	if s.tc != nil {
		l.decrypt(s)
	} else {
		l.relay(s)
	}
}

// decrypt moves every complete TLS record of s's buffer into s.in and
// relays it.
func (l *loop) decrypt(s *side) {
	l.compact(s)
	for {
		s.in = room(s.in)
		m, err := s.tc.Read(s.in[len(s.in):cap(s.in)])
		s.in = s.in[:len(s.in)+m]
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				l.closePair(s)
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

func (l *loop) compact(s *side) {
	if s.off == len(s.in) {
		s.in, s.off = s.in[:0], 0
	} else if s.off > 0 {
		s.in = s.in[:copy(s.in, s.in[s.off:])]
		s.off = 0
	}
}

// stage queues b to be sent on s at the end of the batch.
func (l *loop) stage(s *side, b []byte) {
	if s.tc != nil {
		s.pend = append(s.pend, b...)
	} else {
		s.out = append(s.out, b...)
	}
	l.markDirty(s)
}

func (l *loop) markDirty(s *side) {
	if !s.dirty {
		s.dirty = true
		l.dirty = append(l.dirty, s)
	}
}

// flush seals each dirty side's staged plaintext in one TLS record (or
// as many as 16 KiB records take) and writes it with one write(2).
func (l *loop) flush() {
	for _, s := range l.dirty {
		s.dirty = false
		if s.dead {
			continue
		}
		if s.tc != nil && len(s.pend) > 0 {
			if _, err := s.tc.Write(s.pend); err != nil {
				l.closePair(s)
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
func (l *loop) writeOut(s *side) {
	if len(s.out) > 0 {
		n, err := unix.Write(s.fd, s.out)
		if err == unix.EAGAIN || err == unix.EINTR {
			n = 0
		} else if err != nil {
			l.closePair(s)
			return
		}
		s.out = s.out[:copy(s.out, s.out[n:])]
	}
	l.setPoll(s, s.paused, len(s.out) > 0)
	l.hold(s.peer)
	if len(s.out) == 0 && s.closing {
		l.closePair(s)
	}
}

// setPoll sets which events the loop waits for on s.
func (l *loop) setPoll(s *side, paused, pollOut bool) {
	if s.dead || (paused == s.paused && pollOut == s.pollOut) {
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
		l.closePair(s)
	}
}

func (l *loop) closePair(s *side) {
	for _, c := range []*side{s, s.peer} {
		if c.dead {
			continue
		}
		c.dead = true
		unix.Close(c.fd) // also leaves the epoll set: this is the socket's only descriptor
		l.conns[c.fd] = nil
	}
}
