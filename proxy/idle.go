package proxy

import (
	"net"
	"time"
)

// idleConn gives every read a deadline: a peer that stops sending for
// longer than the idle timeout is cut off (slowloris on bodies, stalled
// tunnels). Streams that keep moving live as long as they like.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(b []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

// CloseWrite passes half-closes through for TCP tunnels.
func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// idleListener wraps accepted connections in idleConn.
type idleListener struct {
	net.Listener
	idle time.Duration
}

func (l idleListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil || l.idle <= 0 {
		return c, err
	}
	return &idleConn{Conn: c, idle: l.idle}, nil
}
