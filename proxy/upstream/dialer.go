package upstream

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/proxy/h2conn"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Dialer opens the connections to endpoints' sidecars: mTLS that proves
// the endpoint's identity (secure naming, Endpoint.ID) and negotiates the
// protocol kind needs (ViaH2: h2; ViaH1 and ViaUpgrade: http/1.1), with
// sni in the ClientHello ("" for none). A connection that implements
// h1.NotAfterConn and h2conn.NotAfterConn carries requests only until
// then (the earlier of the two sides' certificates' expiry). The proxy's
// outbound side is the Dialer of its endpoints.
type Dialer interface {
	DialSidecar(ctx context.Context, ep *Endpoint, kind int, sni string) (net.Conn, error)
}

// Metrics are the counters an endpoint's connections feed (a nil func:
// not counted).
type Metrics struct {
	// ProtocolError counts HTTP/1.1 connections closed for a peer's
	// framing fault, by reason (h1.Client.ProtocolError).
	ProtocolError func(reason string)
}

// NewEndpoint is the sidecar at addr serving svcPort (0: every port) as
// id (zero: any identity of the trust domain), labelled labels, first seen
// at joined (zero: there before this sidecar, warm). d opens its
// connections, each kind's on first use, and m counts what befalls them.
func NewEndpoint(addr naming.Endpoint, svcPort uint32, id spiffeid.ID, labels map[string]string, joined time.Time, d Dialer, m Metrics) *Endpoint {
	e := &Endpoint{Addr: addr.String(), IP: addr.Addr(), IPPort: addr.Port(), SvcPort: svcPort, ID: id, Labels: labels, Joined: joined, dialer: d, metrics: m}
	e.transports = e.newTransports(connOpts{})
	return e
}

// newTransports is the endpoint's connections opened with o: the
// HTTP/1.1 upgrade transport, the lean HTTP/1.1 client and the HTTP/2
// client (proxy/h2conn: one multiplexed connection, more only past the
// peer's stream limit, pinging as o.ping says), each made on first use
// and dialling through the endpoint's Dialer.
func (e *Endpoint) newTransports(o connOpts) *Transports {
	dial := func(kind int) func(ctx context.Context) (net.Conn, error) {
		return func(ctx context.Context) (net.Conn, error) { return e.dialer.DialSidecar(ctx, e, kind, o.sni) }
	}
	ping := o.ping.config()
	return &Transports{
		make: func() *http.Transport {
			tr := &http.Transport{
				DialTLSContext:      func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ViaUpgrade)(ctx) },
				MaxIdleConnsPerHost: 64,
				IdleConnTimeout:     90 * time.Second,
				Protocols:           new(http.Protocols),
				// The app's Accept-Encoding passes as sent; Go's default adds gzip
				// and unzips the answer behind the app's back.
				DisableCompression: true,
			}
			tr.Protocols.SetHTTP1(true)
			return tr
		},
		dial: dial(ViaH1),
		newH2: func() *h2conn.Client {
			return &h2conn.Client{Dialer: dialFunc(dial(ViaH2)), IdleTimeout: 90 * time.Second, PingInterval: ping.SendPingTimeout, PingTimeout: ping.PingTimeout}
		},
		protocolError: e.metrics.ProtocolError,
	}
}

// dialFunc is an h2conn.Dialer.
type dialFunc func(ctx context.Context) (net.Conn, error)

// DialContext dials.
func (f dialFunc) DialContext(ctx context.Context) (net.Conn, error) { return f(ctx) }
