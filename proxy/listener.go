package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-mesh/sigil/listener"
	"github.com/sigil-mesh/sigil/proxy/capture"
)

// Reasons a listener refuses a connection (the reason label of
// sigil_listener_connections_refused_total).
const (
	refusedMaxConnections = "max_connections"
	refusedMaxHandshakes  = "max_handshakes"
	refusedPeerUID        = "peer_uid"
	refusedPeerUnknown    = "peer_unknown"
)

// fdReserve is how many file descriptors the connection caps leave for
// what is not a listener's connection: logs, the policy files, the agent
// socket, the admin port, DNS, the Go runtime.
const fdReserve = 64

// h2Window is the window over which an HTTP/2 connection's resets and
// control frames are counted.
const h2Window = 10 * time.Second

// fdLimit reads the process's open-file limit (RLIMIT_NOFILE, soft; Go
// raises it to the hard limit at start).
func fdLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("proxy: reading RLIMIT_NOFILE: %w", err)
	}
	return rl.Cur, nil
}

// connLimits are the caps of the inbound and outbound listeners.
type connLimits struct {
	inbound, outbound, handshakes int
}

// defaultConnLimits sizes the caps from the fd limit so that the process
// never reaches it: each accepted connection may take a second descriptor
// (the app connection of an inbound request, the upstream connection of an
// outbound one), so the two listeners share half of what is left after
// fdReserve. A quarter of the inbound cap may be handshaking at once.
func defaultConnLimits(fds uint64) connLimits {
	usable := int64(fds) - fdReserve
	if fds > 1<<30 || usable > 1<<30 {
		usable = 1 << 30
	}
	each := max(usable/4, 8)
	return connLimits{inbound: int(each), outbound: int(each), handshakes: int(max(each/4, 4))}
}

// limitedListener accepts connections until max are open, and refuses the
// excess at once (accept and close, counted) so that the process keeps file
// descriptors for the connections it serves. Accept errors that pass by
// themselves are waited out (listener.Retrying); check, if set, vets each
// connection's peer and names the refusal reason when it fails.
type limitedListener struct {
	net.Listener
	name    string
	max     int64
	open    atomic.Int64
	check   func(net.Conn) (refusal string, err error)
	refused *prometheus.CounterVec
	log     *slog.Logger
}

func newLimitedListener(ln net.Listener, name string, max int, reg *prometheus.Registry, refused *prometheus.CounterVec, log *slog.Logger) *limitedListener {
	l := &limitedListener{Listener: listener.Retrying(ln, name, log), name: name, max: int64(max), refused: refused, log: log}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "sigil_listener_connections",
		Help:        "Connections open on a listener.",
		ConstLabels: prometheus.Labels{"listener": name},
	}, func() float64 { return float64(l.open.Load()) }))
	return l
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.check != nil {
			if reason, err := l.check(c); err != nil {
				l.refuse(c, reason, err)
				continue
			}
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			l.refuse(c, refusedMaxConnections, errors.New("proxy: too many open connections"))
			continue
		}
		return &countedConn{Conn: c, open: &l.open}, nil
	}
}

func (l *limitedListener) refuse(c net.Conn, reason string, err error) {
	// No FIN handshake to wait for: the peer learns at once and no
	// descriptor lingers in TIME_WAIT on our side.
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
	l.refused.WithLabelValues(l.name, reason).Inc()
	l.log.Debug("connection refused", "listener", l.name, "peer", c.RemoteAddr().String(), "reason", reason, "error", err)
}

// originalDst is where a connection captured by iptables was going
// (capture.OriginalDst), read from the socket under the listener's
// wrappers.
func originalDst(c net.Conn) (*net.TCPAddr, error) {
	if ic, ok := c.(*idleConn); ok {
		c = ic.Conn
	}
	if cc, ok := c.(*countedConn); ok {
		c = cc.Conn
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, errors.New("proxy: not a TCP connection")
	}
	return capture.OriginalDst(tc)
}

// countedConn gives its listener's slot back when closed, once.
type countedConn struct {
	net.Conn
	open   *atomic.Int64
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.open.Add(-1)
	}
	return c.Conn.Close()
}

// CloseWrite passes half-closes through for TCP tunnels.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// NetConn is the accepted connection underneath.
func (c *countedConn) NetConn() net.Conn { return c.Conn }

// handshakeSlots bounds the TLS handshakes in progress on a listener; each
// is already bounded in time (hsLimit), so a slot always comes back.
type handshakeSlots chan struct{}

// take reports whether a slot was free; the caller gives it back with put.
func (s handshakeSlots) take() bool {
	select {
	case s <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s handshakeSlots) put() { <-s }

// setLimits fixes the listener caps (flags, or sizes from the fd limit)
// and the body rate, and registers the refusal counter.
func (p *Proxy) setLimits() error {
	c := p.cfg
	fds, err := fdLimit()
	if err != nil {
		return err
	}
	p.limits = defaultConnLimits(fds)
	if c.InboundMaxConnections > 0 {
		p.limits.inbound = c.InboundMaxConnections
		p.limits.handshakes = max(c.InboundMaxConnections/4, 4)
	}
	if c.OutboundMaxConnections > 0 {
		p.limits.outbound = c.OutboundMaxConnections
	}
	if c.InboundMaxHandshakes > 0 {
		p.limits.handshakes = c.InboundMaxHandshakes
	}
	if total := uint64(p.limits.inbound+p.limits.outbound) * 2; total+fdReserve > fds {
		p.log.Warn("listener caps exceed what the open-file limit allows; the process may run out of file descriptors",
			"open_file_limit", fds, "inbound_max_connections", p.limits.inbound, "outbound_max_connections", p.limits.outbound)
	}
	p.bodyRate = newBodyRate(int64(c.MinRequestBodyRate), c.MinRequestBodyGrace)
	p.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_listener_connections_refused_total",
		Help: "Connections a listener closed at accept, by listener and reason (max_connections, max_handshakes, peer_uid, peer_unknown).",
	}, []string{"listener", "reason"})
	p.h2Limits = h2Limits{maxResets: c.HTTP2MaxResets, maxControl: c.HTTP2MaxControlFrames, window: h2Window}
	p.h2Closed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sigil_http2_connections_closed_total",
		Help: "HTTP/2 client connections closed with GOAWAY ENHANCE_YOUR_CALM, by listener and reason (rapid_reset, control_frame_flood).",
	}, []string{"listener", "reason"})
	p.metrics.reg.MustRegister(p.refused, p.h2Closed)
	return nil
}

// serveListener runs a listener's accept loop; when it stops for any reason
// but the drain, the sidecar is no longer ready and says why.
func (p *Proxy) serveListener(name string, serve func() error) {
	err := serve()
	if p.drain.Load() {
		return
	}
	if err == nil {
		err = errors.New("proxy: closed")
	}
	p.log.Error("listener stopped; it accepts no more connections", "listener", name, "error", err)
	p.notReady.set(name+"_listener", "stopped: "+err.Error())
}

// appOnly vets outbound connections: the peer socket must belong to the
// app's uid, or to a process in the app's group (--app-uid, --app-gid), as
// the kernel records it. An owner that cannot be found is refused (fail
// closed). Connections redirected by iptables in transparent mode were
// already picked by the owner match of the rules and pass.
func appOnly(transparent bool, uid, gid int) func(net.Conn) (string, error) {
	return func(c net.Conn) (string, error) {
		if transparent {
			if dst, err := originalDst(c); err == nil && dst.String() != c.LocalAddr().String() {
				return "", nil
			}
		}
		puid, inode, err := peerSocket(c)
		if err != nil {
			return refusedPeerUnknown, err
		}
		if uid >= 0 && int(puid) == uid {
			return "", nil
		}
		if gid >= 0 {
			groups, err := peerGroups(inode)
			if err != nil {
				return refusedPeerUnknown, err
			}
			if slices.Contains(groups, uint32(gid)) {
				return "", nil
			}
		}
		return refusedPeerUID, fmt.Errorf("proxy: peer uid %d is not the app's", puid)
	}
}

// guardOutbound applies --app-uid/--app-gid to the outbound listener, or
// warns that any local user may speak as the workload.
func (p *Proxy) guardOutbound(l *limitedListener) {
	c := p.cfg
	if c.AppUID >= 0 || c.AppGID >= 0 {
		l.check = appOnly(c.Transparent, c.AppUID, c.AppGID)
		return
	}
	msg := "outbound listener takes connections from any local user, who then speak as this workload's identity; set --app-uid"
	if tcp, ok := l.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		msg = "outbound listener is not on loopback: any host that reaches it speaks as this workload's identity; listen on 127.0.0.1 and set --app-uid"
	}
	if c.Transparent {
		msg += " (in transparent mode, redirected connections are picked by the iptables owner match instead)"
	}
	p.log.Warn(msg, "outbound", l.Addr().String())
}
