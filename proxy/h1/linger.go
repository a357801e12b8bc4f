package h1

import (
	"io"
	"net"
	"time"
)

// Bounds of a lingering close (see lingerClose).
const (
	// LingerTimeout is how long a closing connection keeps reading what
	// the peer still sends; Envoy's delayed_close_timeout defaults to the
	// same second.
	LingerTimeout = time.Second
	// LingerBytes is how much it reads and discards at most.
	LingerBytes = 16 << 20
)

// lingerClose ends a connection whose peer may still be sending (a body
// the handler did not read, a refused request). Closing at once, with
// unread bytes in the socket, sends a TCP reset that can overtake the
// response: the peer then sees ECONNRESET, not the answer. So the write
// side is shut first (the peer reads the response and its end), then what
// arrives is read and dropped until the peer closes, LingerTimeout passes
// or LingerBytes were read, as net/http's server does (closeWriteAndWait)
// and Envoy's delayed close. Over TLS, close_notify goes first and the
// raw bytes are dropped undecrypted.
func lingerClose(c net.Conn) {
	raw := c
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite() // close_notify
		}
		raw = tc.NetConn()
	}
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			raw.SetReadDeadline(time.Now().Add(LingerTimeout))
			io.CopyN(io.Discard, raw, LingerBytes)
		}
	}
	c.Close()
}
