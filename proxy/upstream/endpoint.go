package upstream

import (
	"context"
	"math"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
	"github.com/sigil-mesh/sigil/proxy/h2conn"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Endpoint is one sidecar of a service, with what the balancer and
// outlier detection know of it. Endpoints outlive configuration changes:
// they are kept by address and identity, so ejections, latency estimates
// and pooled connections carry over.
type Endpoint struct {
	Addr    string      // host:port, naming.Endpoint's String
	IP      netip.Addr  // its IP when the host is one (discovery's always are)
	IPPort  uint16      // Addr's port
	ID      spiffeid.ID // the identity its agent attested; zero: any of the trust domain
	SvcPort uint32      // the service port it serves (a Kubernetes Service's); 0: every port
	Labels  map[string]string
	// Joined is when this sidecar first saw the endpoint: a warmup
	// (slowStart) counts from it; zero: before this sidecar started, warm.
	Joined time.Time

	Active atomic.Int64 // requests in flight

	mu           sync.Mutex
	ewma         float64 // peak EWMA of latency, seconds
	ewmaAt       time.Time
	consec5xx    int
	consecGW     int
	ejectedUntil time.Time
	ejections    int

	transports *Transports
	// bySNI holds the connections of clusters whose policy sets them
	// apart (connOpts → *Transports, made by newTransports): an ISTIO_MUTUAL
	// tls sni (a ClientHello's server name is fixed per connection) or an
	// http2KeepAlive (PINGs are per connection). Its keys come from
	// DestinationRules only, never from requests.
	bySNI sync.Map
	// dialer opens its connections (nil: none, in tests of the balancer);
	// metrics counts what befalls them.
	dialer  Dialer
	metrics Metrics
}

// connOpts is what a cluster's policy fixes for each of its connections
// to an endpoint: the sni of the ClientHello and the HTTP/2 PINGs.
type connOpts struct {
	sni  string
	ping h2Ping
}

// via is the endpoint's connections opened with o (the zero connOpts: the
// endpoint's own, which send no sni and ping at the defaults).
func (e *Endpoint) via(o connOpts) *Transports {
	if o == (connOpts{}) || e.dialer == nil {
		return e.transports
	}
	if t, ok := e.bySNI.Load(o); ok {
		return t.(*Transports)
	}
	t, _ := e.bySNI.LoadOrStore(o, e.newTransports(o))
	return t.(*Transports)
}

// Close closes the endpoint's idle pooled connections, of every connOpts;
// requests in flight finish first.
func (e *Endpoint) Close() {
	e.transports.close()
	e.bySNI.Range(func(_, t any) bool {
		t.(*Transports).close()
		return true
	})
}

// Transports are an endpoint's pooled connections: HTTP/2 for what the
// app sent as HTTP/2 (gRPC), the lean HTTP/1.1 client for HTTP/1.x, and
// net/http's HTTP/1.1 transport for upgrades (WebSocket).
// maxRequestsPerConnection is honoured by the HTTP/1.1 client per
// connection, and for HTTP/2 by starting a new generation (new pool, old
// one drained) every N requests, since one connection carries them all.
type Transports struct {
	mu       sync.Mutex
	up       *http.Transport
	h2       *h2conn.Client
	fast     *h1.Client
	fastPer  int
	requests int
	make     func() *http.Transport                      // HTTP/1.1 upgrades to the endpoint
	dial     func(ctx context.Context) (net.Conn, error) // mTLS to the endpoint, HTTP/1.1
	newH2    func() *h2conn.Client                       // HTTP/2 to the endpoint
	// protocolError counts connections closed for a peer's framing fault.
	protocolError func(reason string)
}

// Kinds of traffic an endpoint carries: requests that travel between the
// sidecars over HTTP/2, over HTTP/1.1, and HTTP/1.1 upgrades (WebSocket).
const (
	ViaH2 = iota
	ViaH1
	ViaUpgrade
)

// Get is the round tripper of kind (ViaH2, ViaH1 or ViaUpgrade) to the
// endpoint, for a cluster whose policy allows perConn requests per
// connection (0: no limit).
func (t *Transports) Get(kind, perConn int) http.RoundTripper {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch kind {
	case ViaUpgrade:
		if t.up == nil {
			t.up = t.make()
		}
		return t.up
	case ViaH1:
		if t.fast == nil || t.fastPer != perConn {
			if t.fast != nil {
				t.fast.CloseIdle(true)
			}
			t.fast, t.fastPer = &h1.Client{Dial: t.dial, MaxIdle: 256, MaxRequestsPerConn: perConn, ProtocolError: t.protocolError}, perConn
		}
		return t.fast
	}
	if t.h2 == nil {
		t.h2 = t.newH2()
	}
	t.requests++
	if perConn > 0 && t.requests > perConn {
		old := t.h2
		t.h2, t.requests = t.newH2(), 1
		// In-flight requests finish on the old connection, which then
		// closes.
		old.Retire()
	}
	return t.h2
}

func (t *Transports) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.up != nil {
		t.up.CloseIdleConnections()
	}
	if t.h2 != nil {
		t.h2.Retire()
	}
	if t.fast != nil {
		t.fast.CloseIdle(true)
	}
}

// ewmaTau is how fast old latency observations fade.
const ewmaTau = 10 * time.Second

// Observe records a request's latency (peak EWMA: a slower sample is taken
// at once, faster ones decay in).
func (e *Endpoint) Observe(d time.Duration, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := d.Seconds()
	if s > e.ewma || e.ewmaAt.IsZero() {
		e.ewma = s
	} else {
		w := math.Exp(-now.Sub(e.ewmaAt).Seconds() / ewmaTau.Seconds())
		e.ewma = e.ewma*w + s*(1-w)
	}
	e.ewmaAt = now
}

// cost is the peak-EWMA balancer's score: expected latency times load.
func (e *Endpoint) cost() float64 {
	e.mu.Lock()
	l := e.ewma
	e.mu.Unlock()
	if l == 0 {
		l = 0.001 // unmeasured endpoints look fast, so they get tried
	}
	return l * float64(e.Active.Load()+1)
}

func (e *Endpoint) ejected(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return now.Before(e.ejectedUntil)
}
