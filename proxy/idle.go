package proxy

import (
	"net"
	"sync"
	"time"
)

// idleConn gives every read a deadline: a peer that stops sending for
// longer than the idle timeout is cut off (slowloris on bodies, stalled
// tunnels). Streams that keep moving live as long as they like.
//
// A deadline set explicitly (net/http aborts its background read with one
// in the past) wins over the idle one: a read must not push it back, or
// the reader it was meant to wake sleeps for the whole idle timeout.
type idleConn struct {
	net.Conn
	idle time.Duration

	mu       sync.Mutex
	explicit time.Time // read deadline set by the connection's user
	set      time.Time // when the idle deadline was last moved
}

func (c *idleConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	now := time.Now()
	switch {
	case !c.explicit.IsZero():
		// The user's deadline stands (it is already set on the conn).
	case now.Sub(c.set) > c.idle/8:
		// Moving a timer on every read costs; within an eighth of the
		// timeout the old deadline is close enough.
		if err := c.Conn.SetReadDeadline(now.Add(c.idle)); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		c.set = now
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

func (c *idleConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.explicit, c.set = t, time.Time{}
	return c.Conn.SetReadDeadline(t)
}

func (c *idleConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.explicit, c.set = t, time.Time{}
	return c.Conn.SetDeadline(t)
}

// CloseWrite passes half-closes through for TCP tunnels.
func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// NetConn is the connection underneath, for what needs its socket
// (proxy/h1's idle peek and linger, proxy/loop's takeover).
func (c *idleConn) NetConn() net.Conn { return c.Conn }

// idleListener wraps accepted connections in idleConn.
type idleListener struct {
	net.Listener
	idle time.Duration
}

func (l idleListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	return l.wrap(c), nil
}

// wrap puts c in an idleConn, unless there is no idle timeout.
func (l idleListener) wrap(c net.Conn) net.Conn {
	if l.idle <= 0 {
		return c
	}
	return &idleConn{Conn: c, idle: l.idle}
}
