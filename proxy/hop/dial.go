package hop

import (
	"context"
	"net"
)

// DialFunc dials one peer: the outbound side's sidecars, the inbound
// side's app. It is an h2conn.Dialer (and any dialer of one method that
// takes only a context).
type DialFunc func(ctx context.Context) (net.Conn, error)

// DialContext calls f.
func (f DialFunc) DialContext(ctx context.Context) (net.Conn, error) { return f(ctx) }
