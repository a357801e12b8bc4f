package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// maxTLSRecord is the largest TLS plaintext record (RFC 8446 §5.1): a
// ClientHello the sidecar reads for its SNI fits in one.
const maxTLSRecord = 16 << 10

// clientHelloWait bounds how long the sidecar waits for the app's
// ClientHello on a connection a tls route may apply to.
const clientHelloWait = 5 * time.Second

// errHelloRead stops the handshake readClientHello runs once the
// ClientHello is parsed.
var errHelloRead = errors.New("proxy: client hello read")

// readClientHello consumes the first TLS record from br and returns it
// with the server name (SNI) of the ClientHello it holds. The record is
// returned even when it is no ClientHello, is cut short or names no
// server (name ""), so the caller can pass on every byte it took. A
// ClientHello spread over several records gives no name (the connection
// is then routed as plain TCP).
func readClientHello(br *bufio.Reader) (record []byte, name string) {
	hdr, err := br.Peek(5)
	if err != nil || hdr[0] != 0x16 {
		return nil, ""
	}
	n := int(hdr[3])<<8 | int(hdr[4])
	if n == 0 || n > maxTLSRecord {
		return nil, ""
	}
	record = make([]byte, 5+n)
	got, err := io.ReadFull(br, record)
	if err != nil {
		return record[:got], ""
	}
	return record, sniOf(record)
}

// sniOf parses a TLS record holding a ClientHello with crypto/tls's own
// parser and returns the server name it asks for, or "".
func sniOf(record []byte) string {
	var name string
	srv := tls.Server(helloConn{r: bytes.NewReader(record)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			name = h.ServerName
			return nil, errHelloRead
		},
	})
	srv.Handshake()
	return name
}

// helloConn feeds a recorded ClientHello to tls.Server and swallows what
// the server would answer.
type helloConn struct{ r io.Reader }

func (c helloConn) Read(b []byte) (int, error)     { return c.r.Read(b) }
func (c helloConn) Write(b []byte) (int, error)    { return len(b), nil }
func (helloConn) Close() error                     { return nil }
func (helloConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (helloConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (helloConn) SetDeadline(time.Time) error      { return nil }
func (helloConn) SetReadDeadline(time.Time) error  { return nil }
func (helloConn) SetWriteDeadline(time.Time) error { return nil }
