package hop

import (
	"context"
	"crypto/tls"
	"net"
)

// DialFunc dials one peer: the outbound side's sidecars, the inbound
// side's app. It is an h2conn.Dialer (and any dialer of one method that
// takes only a context).
type DialFunc func(ctx context.Context) (net.Conn, error)

// DialContext calls f.
func (f DialFunc) DialContext(ctx context.Context) (net.Conn, error) { return f(ctx) }

// HandshakeTLS runs a client TLS handshake with cfg on c, bounded by ctx.
// On failure c is closed and the handshake's error returned as it is.
func HandshakeTLS(ctx context.Context, c net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}
