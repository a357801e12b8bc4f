//go:build linux

package loop

import (
	"cmp"
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
	ended   bool // an upstream side: an answer ended in the bytes being relayed
	gone    bool // an upstream side: its TLS ended (close_notify) with the bytes being relayed
	served  int  // an upstream side: answers read whole on this connection
	// loop bookkeeping
	dirty, pollOut, paused, closing, dead bool
	dialing, adopted                      bool // an upstream side: being dialed; in l.conns
	// deadline is when the loop gives up on a caller-facing side (zero:
	// never); heading: the deadline is a head's, begun and not whole.
	deadline time.Time
	heading  bool
	// head is the last head read (a Head is too big for the stack of
	// every relay); made at the first, and on an upstream side kept
	// with its connection, which moves to and from the pool (a pointer:
	// a side is copied then, and a Head is most of its size).
	head *h1.Head
	// owner is the caller's net.Conn (for an upstream side, the one its
	// dial returned), closed with the side; caller is
	// what a Handler sees of it.
	owner  net.Conn
	caller Caller
	// notAfter: a caller-facing side reads no request from this time
	// on (its peer certificate's expiry; zero: none); an upstream side
	// carries none (Upstream.Dial's, or its leaf certificate's expiry).
	notAfter time.Time
	// upstream and key: where an upstream side's connection goes (nil:
	// Config.Dial), and the pool's name for it. pooled: the side is an
	// idle connection in the pool (no peer, no exchange), since
	// idleSince.
	upstream  Upstream
	key       string
	pooled    bool
	idleSince time.Time
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
	fd int
	// owner is the net.Conn the dial returned, whose socket fd now is:
	// it is closed with the connection, so its wrappers learn of it (a
	// cap on connections per destination frees its slot).
	owner    net.Conn
	tc       *tls.Conn
	bc       *bufConn
	notAfter time.Time
	err      error
}

// drop closes a dial's connection the loop will not use.
func (d *dialed) drop() {
	if d.fd >= 0 {
		unix.Close(d.fd)
	}
	if d.owner != nil {
		d.owner.Close()
	}
}

// exchange is what the two sides of a pair share: the request in flight.
type exchange struct {
	awaiting bool // a request was relayed and its final response is not complete
	isHEAD   bool
	close    bool // end the pair once this exchange completes
	expect   bool // the request waits for 100 Continue, and none reached the caller yet
	upClose  bool // the head sent upstream or its answer said Connection: close: the upstream's connection is not reused
	status   int  // the final response's status, once its head is read
	// answerMark is where the final answer's head begins in what is
	// staged for the caller, until that is sealed and sent (-1: not
	// staged, or sent): an answer found broken before then is taken
	// back whole and the caller gets BadGateway instead.
	answerMark int
	ex         Exchange
	// replay is the request's head as sent, while it may be sent again
	// on a new connection (relay.go, request); empty otherwise.
	replay []byte
	// wrote: a byte of the request was written to an upstream (a
	// Retrier is no longer asked).
	wrote bool
	// timeoutAt is when the exchange times out (Verdict.Timeout; zero:
	// never); timeoutAnswer and unreachable are the Verdict's answers
	// (copied; nil: the defaults).
	timeoutAt     time.Time
	timeoutAnswer []byte
	unreachable   []byte
	// again is the request's head as sent, while the exchange is a
	// Resender and the request has no body (empty otherwise); next is
	// the Upstream a Resender named for it, until it is sent there.
	again     []byte
	againBody int64 // body bytes in again
	next      Upstream
	nextK     string
	// againAt is when the next attempt at the request goes (a
	// Backoffer's wait; zero: none waits); its upstream side has no
	// connection meanwhile.
	againAt time.Time
	// trailers are the request's trailer fields that are forwarded
	// under Config.DropRequestTrailers (Verdict.Trailers, copied).
	trailers []string
	// deciding is the request's Verdict.Decide while it runs (nil:
	// none does).
	deciding *decision
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
				// with the last data) or a failed record goes on first;
				// the connection is not pooled.
				s.gone = true
				tc := s.tc
				l.relay(s)
				if !s.dead && s.tc == tc { // else its answer ended, and the connection with it
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
		if s.isDown {
			s.x.answerMark = -1
		}
		if s.tc != nil && len(s.pend) > 0 {
			if _, err := s.tc.Write(s.pend); err != nil {
				l.closePair(s, hungUp(s))
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
			l.closePair(s, hungUp(s))
			return
		}
		s.out = s.out[:copy(s.out, s.out[n:])]
		if n > 0 && !s.isDown {
			s.x.wrote = true
		}
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

// hungUp is the error of an exchange whose side s's peer hung up:
// ErrCallerHungUp for the caller's side.
func hungUp(s *side) error {
	if s.isDown {
		return ErrCallerHungUp
	}
	return ErrHungUp
}

// setPoll sets which events the loop waits for on s.
func (l *Loop) setPoll(s *side, paused, pollOut bool) {
	if s.dead || !s.adopted || (paused == s.paused && pollOut == s.pollOut) {
		return
	}
	s.paused, s.pollOut = paused, pollOut
	ev := unix.EpollEvent{Fd: int32(s.fd)}
	switch {
	case !paused:
		ev.Events |= unix.EPOLLIN | unix.EPOLLRDHUP
	case s.isDown && s.x.deciding != nil:
		ev.Events |= unix.EPOLLRDHUP // a caller that leaves while Decide runs is let go at once
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
	if d := s.x.deciding; d != nil {
		s.x.deciding = nil
		d.gone = cmp.Or(err, ErrHungUp) // told when Decide returns
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
