package h1

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// lazyDeadline is a server connection's read deadline, of which the
// server loop may leave a change pending until the next read: the
// header timeout when the head must still be read from the peer, the
// cleared deadline when the handler reads a body that has not arrived.
// A request whose head (and body) came whole in one read then costs one
// deadline change (the idle timeout) instead of three; each is a runtime
// timer operation. Deadlines apply exactly as if set at once: nothing
// reads the connection but through the limitReader (Hijack cancels
// what is pending and clears the deadline).
type lazyDeadline struct {
	c       net.Conn
	pending atomic.Bool // at is to be set before the next read
	mu      sync.Mutex  // orders pending's application with set and cancel
	at      time.Time
}

// set sets the read deadline now, dropping what was pending.
func (d *lazyDeadline) set(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pending.Store(false)
	return d.c.SetReadDeadline(t)
}

// later leaves t to be set before the connection's next read. Only the
// server loop calls it, between a handler's return and the next.
func (d *lazyDeadline) later(t time.Time) {
	d.mu.Lock()
	d.at = t
	d.pending.Store(true)
	d.mu.Unlock()
}

// cancel drops what was pending (Hijack clears the deadline itself).
func (d *lazyDeadline) cancel() {
	d.mu.Lock()
	d.pending.Store(false)
	d.mu.Unlock()
}

// apply sets what is pending, if it still is.
func (d *lazyDeadline) apply() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.pending.Load() {
		return nil
	}
	d.pending.Store(false)
	return d.c.SetReadDeadline(d.at)
}
