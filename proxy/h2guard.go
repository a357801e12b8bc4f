package proxy

import (
	"net"
	"net/http"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h2conn"
)

// h2Limits bound what one HTTP/2 connection from a client may send per
// window: RST_STREAM frames (CVE-2023-44487, rapid reset), and control
// frames that cost the server work but carry no request (SETTINGS and PING
// without ACK, PRIORITY, WINDOW_UPDATE of zero, empty DATA without
// END_STREAM; Envoy and nghttp2 count the same kinds) beyond those the
// connection earned by progress (h2abuse: grpc-go's ping rule, so BDP
// and keepalive pings are never counted against a working client).
type h2Limits struct {
	maxResets  int
	maxControl int
	window     time.Duration
}

// h2connLimits are lim for an h2conn.Server (where 0 takes a default and
// a negative count is no limit), with 250 concurrent streams as the
// HTTP/2 servers here allow.
func h2connLimits(lim h2Limits) h2conn.Limits {
	noLimit := func(n int) int {
		if n <= 0 {
			return -1
		}
		return n
	}
	return h2conn.Limits{MaxStreams: 250, MaxResets: noLimit(lim.maxResets), MaxControlFrames: noLimit(lim.maxControl), Window: lim.window}
}

// h2Server is the HTTP/2 server of one listener ("inbound": other
// sidecars; "outbound": the app's h2c) serving h: the proxy's HTTP/2
// limits, connections idle for 2 minutes closed, and every connection
// closed for abuse counted in sigil_http2_connections_closed_total and
// logged.
func (p *Proxy) h2Server(h http.Handler, listener string) *h2conn.Server {
	return &h2conn.Server{
		Handler:     p.bodyRate.handler(h),
		IdleTimeout: 2 * time.Minute,
		Limits:      h2connLimits(p.h2Limits),
		OnAbuse: func(peer net.Addr, reason string) {
			p.h2Closed.WithLabelValues(listener, reason).Inc()
			p.log.Warn("http2 connection closed for abuse (GOAWAY ENHANCE_YOUR_CALM)", "listener", listener, "peer", peer.String(), "reason", reason)
		},
		Log: p.log,
	}
}
