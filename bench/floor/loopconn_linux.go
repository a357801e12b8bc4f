//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The -loop=conns data path: proxy/h1's server and client, unchanged,
// over connections whose reads come from a poller of the floor's own.
// The poller waits on its epoll set (level-triggered) and does one
// read(2) per ready socket into that connection's buffer; a goroutine
// reading an empty buffer parks on a channel instead of trying the
// socket. Go's poller tries the read first and parks on EAGAIN, so
// every request costs it a read that finds nothing on each side; this
// poller reads only what epoll said is there. Writes go straight to the
// socket from the writing goroutine.

// connBuf bounds the bytes a connection holds unread before the poller
// stops reading its socket.
const connBuf = 64 << 10

// poller reads ready sockets for their pollConns.
type poller struct {
	epfd   int
	rc     syscall.RawConn
	events []unix.EpollEvent
	mu     sync.Mutex
	conns  map[int32]*pollConn
}

func newPoller() (*poller, error) {
	l, err := newLoop() // the same parked-in-Go's-scheduler epoll instance
	if err != nil {
		return nil, err
	}
	p := &poller{epfd: l.epfd, rc: l.rc, events: l.events, conns: map[int32]*pollConn{}}
	go p.run()
	return p, nil
}

// pollConn is a TCP connection whose reads the poller does.
type pollConn struct {
	p     *poller
	fd    int
	local net.Addr
	peer  net.Addr

	mu        sync.Mutex
	buf       []byte // read by the poller; buf[r:] not yet taken
	r         int
	err       error // what ended reading (io.EOF, a reset); after buf is taken
	paused    bool  // the poller stopped reading: buf is full
	pollOut   bool  // a Write waits for the socket to take more
	waiting   bool  // a Read is parked on ready
	closed    bool
	deadline  time.Time
	ready     chan struct{} // cap 1: the poller read something, or err is set
	timer     *time.Timer
	wdeadline time.Time
	wmu       sync.Mutex // one Write at a time; Close waits for it
	writable  chan struct{}
}

// wrap moves c's socket to the poller (c is closed; its descriptor is
// duplicated) and returns the connection that reads through it.
func (p *poller) wrap(c net.Conn) (*pollConn, error) {
	local, peer := c.LocalAddr(), c.RemoteAddr()
	fd, err := takeFD(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	pc := &pollConn{p: p, fd: fd, local: local, peer: peer, ready: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
	p.mu.Lock()
	p.conns[int32(fd)] = pc
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		pc.Close()
		return nil, fmt.Errorf("floor: epoll_ctl add: %w", err)
	}
	return pc, nil
}

func (p *poller) run() {
	for {
		n := wait(p.rc, p.epfd, p.events)
		p.mu.Lock()
		for _, ev := range p.events[:n] {
			pc := p.conns[ev.Fd]
			if pc == nil {
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				pc.mu.Lock()
				pc.pollOut = false
				pc.setEventsLocked()
				pc.mu.Unlock()
				select {
				case pc.writable <- struct{}{}:
				default:
				}
			}
			if ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				pc.drain() // reported even when not asked for: it would spin
			} else if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP) != 0 {
				pc.fill()
			}
		}
		p.mu.Unlock()
	}
}

// fill does one read(2) into pc's buffer; the poller calls it when the
// socket is readable.
func (pc *pollConn) fill() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed || pc.paused || pc.err != nil {
		return
	}
	if pc.r > 0 {
		pc.buf = pc.buf[:copy(pc.buf, pc.buf[pc.r:])]
		pc.r = 0
	}
	if cap(pc.buf)-len(pc.buf) < readSize {
		if len(pc.buf) >= connBuf {
			pc.paused = true
			pc.setEventsLocked()
			return
		}
		pc.buf = room(pc.buf)
	}
	if pc.readOnce() {
		return
	}
	if pc.err != nil {
		pc.setEventsLocked() // nothing more to read: stop level-triggered wake-ups
	}
	pc.wakeReader()
}

// readOnce does one read(2) into the free room of pc's buffer; at the
// end of the stream or on an error it sets pc.err. It reports whether
// the socket had nothing (EAGAIN, or a signal).
func (pc *pollConn) readOnce() (empty bool) {
	n, err := unix.Read(pc.fd, pc.buf[len(pc.buf):cap(pc.buf)])
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return true
	case err != nil:
		pc.err = os.NewSyscallError("read", err)
	case n == 0:
		pc.err = io.EOF
	default:
		pc.buf = pc.buf[:len(pc.buf)+n]
	}
	return false
}

// wakeReader wakes a Read parked on pc, if there is one.
func (pc *pollConn) wakeReader() {
	if pc.waiting {
		select {
		case pc.ready <- struct{}{}:
		default:
		}
	}
}

// drain reads what is left on a socket that hung up or failed, whatever
// the buffer holds (a hang-up bounds it by the socket's receive
// buffer), until the end, then takes the socket out of the set.
func (pc *pollConn) drain() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for !pc.closed && pc.err == nil {
		pc.buf = room(pc.buf)
		if pc.readOnce() {
			pc.err = io.ErrUnexpectedEOF // hung up with nothing left: the peer is gone
		}
	}
	pc.paused = false
	pc.setEventsLocked()
	pc.wakeReader()
}

// setEventsLocked sets what the poller waits for on pc's socket: input
// unless paused or ended, output while a Write waits.
func (pc *pollConn) setEventsLocked() {
	if pc.closed {
		return
	}
	if pc.err != nil && !pc.pollOut {
		// Nothing more to read and no Write waiting: out of the set, so
		// that the hang-up epoll reports unasked does not spin the poller.
		unix.EpollCtl(pc.p.epfd, unix.EPOLL_CTL_DEL, pc.fd, nil)
		return
	}
	ev := unix.EpollEvent{Fd: int32(pc.fd)}
	if !pc.paused && pc.err == nil {
		ev.Events |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if pc.pollOut {
		ev.Events |= unix.EPOLLOUT
	}
	unix.EpollCtl(pc.p.epfd, unix.EPOLL_CTL_MOD, pc.fd, &ev)
}

func (pc *pollConn) Read(b []byte) (int, error) {
	for {
		pc.mu.Lock()
		if pc.closed {
			pc.mu.Unlock()
			return 0, net.ErrClosed
		}
		if pc.r < len(pc.buf) {
			n := copy(b, pc.buf[pc.r:])
			pc.r += n
			if pc.r == len(pc.buf) {
				pc.buf, pc.r = pc.buf[:0], 0
			}
			if pc.paused {
				pc.paused = false
				pc.setEventsLocked()
			}
			pc.mu.Unlock()
			return n, nil
		}
		if pc.err != nil {
			err := pc.err
			pc.mu.Unlock()
			return 0, err
		}
		d := pc.deadline
		if !d.IsZero() && !time.Now().Before(d) {
			pc.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		pc.waiting = true
		pc.mu.Unlock()
		if d.IsZero() {
			<-pc.ready
		} else {
			if pc.timer == nil {
				pc.timer = time.NewTimer(time.Until(d))
			} else {
				pc.timer.Reset(time.Until(d))
			}
			select {
			case <-pc.ready:
			case <-pc.timer.C:
			}
			pc.timer.Stop()
		}
		pc.mu.Lock()
		pc.waiting = false
		pc.mu.Unlock()
	}
}

func (pc *pollConn) Write(b []byte) (int, error) {
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	total := 0
	for len(b) > 0 {
		pc.mu.Lock()
		closed, d := pc.closed, pc.wdeadline
		pc.mu.Unlock()
		if closed {
			return total, net.ErrClosed
		}
		if !d.IsZero() && !time.Now().Before(d) {
			return total, os.ErrDeadlineExceeded
		}
		n, err := unix.Write(pc.fd, b)
		if n > 0 {
			total += n
			b = b[n:]
		}
		switch {
		case err == nil, err == unix.EINTR:
		case err == unix.EAGAIN:
			pc.mu.Lock()
			pc.pollOut = true
			pc.setEventsLocked()
			pc.mu.Unlock()
			if d.IsZero() {
				<-pc.writable
			} else {
				t := time.NewTimer(time.Until(d))
				select {
				case <-pc.writable:
				case <-t.C:
				}
				t.Stop()
			}
		default:
			return total, os.NewSyscallError("write", err)
		}
	}
	return total, nil
}

func (pc *pollConn) Close() error {
	pc.mu.Lock()
	if pc.closed {
		pc.mu.Unlock()
		return net.ErrClosed
	}
	pc.closed = true
	pc.mu.Unlock()
	for _, ch := range []chan struct{}{pc.ready, pc.writable} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	pc.wmu.Lock() // a parked Write has seen closed and left
	defer pc.wmu.Unlock()
	pc.p.mu.Lock() // and the poller is not inside a batch (an event of a batch for a number reused since is harmless: a fill that finds nothing)
	defer pc.p.mu.Unlock()
	delete(pc.p.conns, int32(pc.fd))
	return unix.Close(pc.fd) // also leaves the epoll set: the socket's only descriptor
}

func (pc *pollConn) LocalAddr() net.Addr  { return pc.local }
func (pc *pollConn) RemoteAddr() net.Addr { return pc.peer }

func (pc *pollConn) SetDeadline(t time.Time) error {
	pc.SetReadDeadline(t)
	return pc.SetWriteDeadline(t)
}

func (pc *pollConn) SetReadDeadline(t time.Time) error {
	pc.mu.Lock()
	pc.deadline = t
	waiting := pc.waiting
	pc.mu.Unlock()
	if waiting { // a parked Read re-checks its deadline
		select {
		case pc.ready <- struct{}{}:
		default:
		}
	}
	return nil
}

func (pc *pollConn) SetWriteDeadline(t time.Time) error {
	pc.mu.Lock()
	pc.wdeadline = t
	pc.mu.Unlock()
	select { // a parked Write re-checks its deadline
	case pc.writable <- struct{}{}:
	default:
	}
	return nil
}
