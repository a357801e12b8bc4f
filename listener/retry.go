// Package listener holds what every Sigil binary does on the accept side of
// a socket: riding out temporary accept errors (the process out of file
// descriptors, the kernel out of buffers, a peer gone before accept)
// instead of letting one failed accept stop the listener for good.
//
//	ln = listener.Retrying(ln, "inbound", log)
//	for {
//		c, err := ln.Accept() // returns only a connection or a permanent error
//		...
//	}
package listener

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// Backoff between failed accepts: net/http's Server and grpc-go use the
// same, 5 ms doubling to 1 s.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// Temporary reports whether an accept error passes by itself: the process
// or system is out of file descriptors (EMFILE, ENFILE), the kernel out of
// buffers or memory (ENOBUFS, ENOMEM), or the peer left before the accept
// (ECONNABORTED, EPROTO, ECONNRESET), or an error that says it is
// temporary. A closed listener is never temporary.
func Temporary(err error) bool {
	if err == nil || errors.Is(err, net.ErrClosed) {
		return false
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
			syscall.ECONNABORTED, syscall.EPROTO, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN:
			return true
		}
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// retrying is a net.Listener whose Accept retries temporary errors.
type retrying struct {
	net.Listener
	name  string
	log   *slog.Logger
	sleep func(time.Duration) // time.Sleep; tests shorten it
}

// Retrying wraps ln so that Accept waits out temporary errors (see
// Temporary) with a backoff of 5 ms doubling to 1 s, logging each at warn
// level, and returns only a connection or a permanent error (net.ErrClosed
// after Close). name says which listener in the log lines.
func Retrying(ln net.Listener, name string, log *slog.Logger) net.Listener {
	return &retrying{Listener: ln, name: name, log: log, sleep: time.Sleep}
}

func (l *retrying) Accept() (net.Conn, error) {
	var wait time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil || !Temporary(err) {
			return c, err
		}
		if wait == 0 {
			wait = minBackoff
		} else {
			wait = min(2*wait, maxBackoff)
		}
		l.log.Warn("accept failed; retrying", "listener", l.name, "error", err, "retry_in", wait.String())
		l.sleep(wait)
	}
}
