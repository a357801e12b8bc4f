package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/traffic"
)

// Envoy's circuit-breaker defaults for a cluster, which Sigil applies per
// destination sidecar: at most this many connections, and this many dials
// waiting for one to free; the rest overflow at once.
const (
	defaultMaxUpstreamConns   = 1024
	defaultMaxUpstreamPending = 1024
	// upstreamConnWait bounds how long a dial waits for a slot when it
	// has no request to follow (a mirror, say).
	upstreamConnWait = 5 * time.Second
)

// errUpstreamConnOverflow is a dial refused because the destination's
// connections and pending dials are all taken.
var errUpstreamConnOverflow = errors.New("upstream: connection limit reached")

// Conns caps the connections the outbound side holds to each
// destination sidecar (by address), so that no caller, however it behaves
// (an HTTP/2 client cancelling every request it sends, say), makes this
// sidecar spread its load as new connections to its peers. A
// DestinationRule's connectionPool.tcp.maxConnections overrides the
// default for the endpoints of its host.
type Conns struct {
	mu       sync.Mutex
	by       map[string]*connLimiter
	open     atomic.Int64
	overflow prometheus.Counter
}

// NewConns is the outbound side's cap on its connections to other
// sidecars, its metrics (sigil_upstream_connections,
// sigil_upstream_connections_overflow_total) registered with reg.
func NewConns(reg *prometheus.Registry) *Conns {
	u := &Conns{by: map[string]*connLimiter{}}
	u.overflow = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sigil_upstream_connections_overflow_total",
		Help: "Dials to a destination sidecar refused because its connections (max_connections) and pending dials were all taken.",
	})
	reg.MustRegister(u.overflow, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sigil_upstream_connections",
		Help: "Connections open from the outbound side to other sidecars.",
	}, func() float64 { return float64(u.open.Load()) }))
	return u
}

func (u *Conns) limiter(addr string) *connLimiter {
	u.mu.Lock()
	defer u.mu.Unlock()
	l := u.by[addr]
	if l == nil {
		l = &connLimiter{max: defaultMaxUpstreamConns, freed: make(chan struct{}), dial: defaultDialPolicy}
		u.by[addr] = l
	}
	return l
}

// SetMax applies a DestinationRule's maxConnections (0: the default) to
// eps. An outbound built without Conns (some tests route without
// ever dialing) has nothing to set.
// It reports whether it lowered an endpoint's cap: connections kept
// idle elsewhere (an event loop's pool) may then hold slots that are
// wanted.
func (u *Conns) SetMax(eps []*Endpoint, n int) (lowered bool) {
	if u == nil {
		return false
	}
	if n <= 0 {
		n = defaultMaxUpstreamConns
	}
	for _, e := range eps {
		l := u.limiter(e.Addr)
		l.mu.Lock()
		lowered = lowered || n < l.max
		l.max = n
		l.mu.Unlock()
	}
	return lowered
}

// DialPolicy is how the outbound dials one destination sidecar: its
// DestinationRule's connectionPool.tcp connectTimeout (default 5s) and
// tcpKeepalive (default: keepalive probes after 30s idle, as before any
// rule).
type DialPolicy struct {
	timeout   time.Duration
	keepAlive net.KeepAliveConfig
}

// defaultDialPolicy is the dial for a destination no rule tunes.
var defaultDialPolicy = DialPolicy{timeout: 5 * time.Second, keepAlive: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second}}

// DialPolicyOf reads connectionPool.tcp's connectTimeout and
// tcpKeepalive (time → Idle, interval → Interval, probes → Count; an
// unset one keeps Go's default).
func DialPolicyOf(p *traffic.TrafficPolicy) DialPolicy {
	d := defaultDialPolicy
	if p == nil || p.ConnectionPool == nil || p.ConnectionPool.TCP == nil {
		return d
	}
	t := p.ConnectionPool.TCP
	if t.ConnectTimeout != nil {
		d.timeout = t.ConnectTimeout.Duration
	}
	if ka := t.TCPKeepalive; ka != nil {
		d.keepAlive = net.KeepAliveConfig{Enable: true}
		if ka.Time != nil {
			d.keepAlive.Idle = ka.Time.Duration
		}
		if ka.Interval != nil {
			d.keepAlive.Interval = ka.Interval.Duration
		}
		if ka.Probes != nil {
			d.keepAlive.Count = int(*ka.Probes)
		}
	}
	return d
}

// dialer is the net.Dialer for d.
func (d DialPolicy) dialer() *net.Dialer {
	return &net.Dialer{Timeout: d.timeout, KeepAliveConfig: d.keepAlive}
}

// SetDial applies a DestinationRule's dial settings to eps (a nil
// Conns, as in SetMax, has nothing to set).
func (u *Conns) SetDial(eps []*Endpoint, d DialPolicy) {
	if u == nil {
		return
	}
	for _, e := range eps {
		l := u.limiter(e.Addr)
		l.mu.Lock()
		l.dial = d
		l.mu.Unlock()
	}
}

// MaxConnectionsOf reads connectionPool.tcp.maxConnections (0: unset).
func MaxConnectionsOf(p *traffic.TrafficPolicy) int {
	if p == nil || p.ConnectionPool == nil || p.ConnectionPool.TCP == nil {
		return 0
	}
	return int(p.ConnectionPool.TCP.MaxConnections)
}

// requestCtxKey carries, in a request's context, the request's own context:
// net/http's Transport dials with the request's values but not its
// cancellation, and a dial for a request already gone is load for nothing.
type requestCtxKey struct{}

// WithRequestCtx marks r's context as the one dials for r follow.
func WithRequestCtx(ctx context.Context) context.Context {
	return context.WithValue(ctx, requestCtxKey{}, ctx)
}

// Dial opens a TCP connection to addr within its cap: it fails at once if
// the request it serves is gone, waits for a slot while the request lives
// (at most upstreamConnWait without one), and overflows when too many
// wait already. Closing the connection frees the slot.
func (u *Conns) Dial(ctx context.Context, addr string) (net.Conn, error) {
	if rc, ok := ctx.Value(requestCtxKey{}).(context.Context); ok {
		if err := rc.Err(); err != nil {
			return nil, err
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(rc, cancel)()
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, upstreamConnWait)
		defer cancel()
	}
	l := u.limiter(addr)
	if err := l.acquire(ctx); err != nil {
		if errors.Is(err, errUpstreamConnOverflow) {
			u.overflow.Inc()
		}
		return nil, err
	}
	l.mu.Lock()
	d := l.dial
	l.mu.Unlock()
	c, err := d.dialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		l.release()
		return nil, err
	}
	u.open.Add(1)
	return &limitedConn{Conn: c, release: func() { l.release(); u.open.Add(-1) }}, nil
}

// DialTLS opens an mTLS connection to addr within its cap.
func (u *Conns) DialTLS(ctx context.Context, addr string, cfg *tls.Config) (*tls.Conn, error) {
	c, err := u.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return hop.HandshakeTLS(ctx, c, cfg)
}

// connLimiter counts one destination's connections.
type connLimiter struct {
	mu      sync.Mutex
	max     int
	open    int
	waiting int
	freed   chan struct{} // closed, and replaced, when a slot frees
	dial    DialPolicy
}

func (l *connLimiter) acquire(ctx context.Context) error {
	l.mu.Lock()
	for l.open >= l.max {
		if l.waiting >= defaultMaxUpstreamPending {
			l.mu.Unlock()
			return errUpstreamConnOverflow
		}
		freed := l.freed
		l.waiting++
		l.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			l.mu.Lock()
			l.waiting--
			l.mu.Unlock()
			return ctx.Err()
		}
		l.mu.Lock()
		l.waiting--
	}
	l.open++
	l.mu.Unlock()
	return nil
}

func (l *connLimiter) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	close(l.freed)
	l.freed = make(chan struct{})
}

// limitedConn frees its slot when closed, once.
type limitedConn struct {
	net.Conn
	release func()
	once    sync.Once
}

// Close closes the connection and frees its slot.
func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// NetConn is the dialled connection underneath: the h1 client peeks at
// its socket before reusing a pooled connection (h1.idlePeek).
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

// CloseWrite passes half-closes through for TCP tunnels.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
