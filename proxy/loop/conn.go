package loop

import (
	"crypto/tls"
	"net"
	"os"
	"time"
)

// Conn is a caller's connection a Loop can take over: TLS made by
// Server, or plaintext made by Plain. Until Take, it is an ordinary
// connection on Go's poller (a caller that decides by ALPN to keep it
// uses TLS as any *tls.Conn).
type Conn struct {
	// TLS is the connection's TLS side; nil for a plaintext one.
	TLS *tls.Conn
	raw net.Conn
	bc  *bufConn // under TLS
	// buffered is what was read from raw before Take (PlainWith): the
	// loop reads it first.
	buffered []byte
}

// Server is the server side of TLS over c with cfg, in a form the loop
// can take over once the handshake is done. Do the handshake with
// TLS.HandshakeContext.
func Server(c net.Conn, cfg *tls.Config) *Conn {
	bc := &bufConn{nc: c}
	return &Conn{TLS: tls.Server(bc, cfg), raw: c, bc: bc}
}

// Plain is a plaintext connection for Take.
func Plain(c net.Conn) *Conn { return &Conn{raw: c} }

// PlainWith is a plaintext connection for Take of which buffered was
// read already (a protocol sniff's bufio.Reader's bytes): the loop reads
// them first, then the socket. buffered is copied.
func PlainWith(c net.Conn, buffered []byte) *Conn {
	return &Conn{raw: c, buffered: append([]byte(nil), buffered...)}
}

// bufConn is the net.Conn under a loop-owned tls.Conn. Until the loop
// takes the connection it reads and writes the socket through Go's
// poller (nc); after that, reads take the bytes the loop read into buf,
// and writes append to out.
type bufConn struct {
	nc  net.Conn
	buf []byte
	r   int
	out *[]byte
}

func (b *bufConn) Read(p []byte) (int, error) {
	if b.r == len(b.buf) {
		if b.nc != nil {
			return b.nc.Read(p)
		}
		return 0, os.ErrDeadlineExceeded // crypto/tls keeps what it has and returns; the loop reads more
	}
	// Bytes the loop read: all of them before the socket again (a
	// connection handed back to goroutines).
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
	*b.out = append(*b.out, p...)
	return len(p), nil
}

func (b *bufConn) Close() error {
	if b.nc != nil {
		return b.nc.Close()
	}
	return nil
}

func (b *bufConn) LocalAddr() net.Addr {
	if b.nc != nil {
		return b.nc.LocalAddr()
	}
	return nil
}

func (b *bufConn) RemoteAddr() net.Addr {
	if b.nc != nil {
		return b.nc.RemoteAddr()
	}
	return nil
}

func (b *bufConn) SetDeadline(t time.Time) error      { return b.setDeadline(t) }
func (b *bufConn) SetReadDeadline(t time.Time) error  { return b.setDeadline(t) }
func (b *bufConn) SetWriteDeadline(t time.Time) error { return b.setDeadline(t) }

func (b *bufConn) setDeadline(t time.Time) error {
	if b.nc != nil {
		return b.nc.SetDeadline(t)
	}
	return nil
}

// NetConn is the connection underneath, until the loop takes it (then
// nil).
func (b *bufConn) NetConn() net.Conn { return b.nc }

// handedConn is a connection the loop handed back (Config.Handoff): its
// reads return first what the loop had read and not relayed, then the
// connection's; Close also closes the caller's net.Conn given to Take.
type handedConn struct {
	net.Conn // the TLS connection, or the socket
	prefix   []byte
	owner    net.Conn
}

func (c *handedConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *handedConn) Close() error {
	err := c.Conn.Close()
	if c.owner != nil {
		c.owner.Close() // its socket is closed already: this gives back what wraps it (a listener's slot)
	}
	return err
}

// ConnectionState is the TLS connection's state (zero for a plaintext
// one), for servers that read the caller's certificate from it.
func (c *handedConn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// NetConn is the connection underneath: the TLS connection, or the
// socket.
func (c *handedConn) NetConn() net.Conn { return c.Conn }
