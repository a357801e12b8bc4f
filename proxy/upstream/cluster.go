package upstream

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-mesh/sigil/protocol"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/traffic"
)

// Cluster is a service's subset as a sidecar sends to it: its endpoints and
// the DestinationRule policy that applies (balancer, connection pool,
// outlier detection). Service is the service's host
// (api.prod.svc.cluster.local): the destination_service of the counters
// it adds to, as in sigil_requests_total, so that services of one name in
// two namespaces count apart.
type Cluster struct {
	Service, Subset string
	Eps             []*Endpoint
	lb              string
	Pool            *Pool
	outlier         *outlierPolicy
	rr              *atomic.Uint64
	// SNI is the server name the mTLS ClientHello to the cluster's
	// sidecars carries: its policy's ISTIO_MUTUAL tls.sni, "" for none.
	SNI string
	// ping is its policy's connectionPool.http.http2KeepAlive (zero: the
	// defaults).
	ping h2Ping
	// Hash is its policy's loadBalancer.consistentHash (nil: none).
	Hash *HashPolicy
	// upgradeH2 is its policy's connectionPool.http.h2UpgradePolicy
	// UPGRADE: HTTP/1.1 requests travel between the sidecars over HTTP/2.
	upgradeH2 bool
	// warm is its policy's loadBalancer warmup (zero: none).
	warm slowStart
	// clock reads the time (nil: time.Now); tests set it.
	clock func() time.Time
}

// NewCluster is the cluster of service (its host, for the counters) and
// subset over eps, under policy p (nil: Istio's defaults), sharing pl and
// the round-robin counter rr with the clusters before it of the same key
// (Clusters.PoolFor); clock reads the time (nil: time.Now).
func NewCluster(service, subset string, eps []*Endpoint, p *traffic.TrafficPolicy, pl *Pool, rr *atomic.Uint64, clock func() time.Time) *Cluster {
	return &Cluster{Service: service, Subset: subset, Eps: eps, lb: lbOf(p), Pool: pl, outlier: outlierOf(p), rr: rr, SNI: meshSNI(p), ping: h2PingOf(p), Hash: hashPolicyOf(p), upgradeH2: upgradeH2Of(p), warm: slowStartOf(p), clock: clock}
}

// Balancer is the cluster's load balancer: PEAK_EWMA (the default),
// ROUND_ROBIN, LEAST_REQUEST (LEAST_CONN too) or RANDOM.
func (c *Cluster) Balancer() string { return c.lb }

// now is the cluster's clock.
func (c *Cluster) now() time.Time {
	if c.clock != nil {
		return c.clock()
	}
	return time.Now()
}

// KindOf picks the connection a request travels on to the cluster's
// sidecars: as the package's kindOf, but HTTP/1.1 over HTTP/2 when the
// policy says UPGRADE (never a WebSocket upgrade, which HTTP/2 between
// the sidecars cannot carry as it came; Envoy's upgrade skips them too).
func (c *Cluster) KindOf(r *http.Request) int {
	k := kindOf(r)
	if k == ViaH1 && c.upgradeH2 && !hop.IsWebSocketUpgrade(r.Header) {
		return ViaH2
	}
	return k
}

// upgradeH2Of reads connectionPool.http.h2UpgradePolicy.
func upgradeH2Of(p *traffic.TrafficPolicy) bool {
	return p != nil && p.ConnectionPool != nil && p.ConnectionPool.HTTP != nil && p.ConnectionPool.HTTP.H2UpgradePolicy == traffic.H2UpgradeUpgrade
}

// Conns is the cluster's connections to ep: those its sni and
// http2KeepAlive call for.
func (c *Cluster) Conns(ep *Endpoint) *Transports {
	return ep.via(connOpts{sni: c.SNI, ping: c.ping})
}

// h2Ping is a cluster's HTTP/2 PING health check of its connections to
// the destination's sidecars (Istio's http2KeepAlive, Envoy's
// connection_keepalive): interval is how long a connection may go without
// a frame received before the sidecar sends a PING, timeout how long it
// waits for the answer before closing the connection. Zero: the default.
type h2Ping struct {
	interval, timeout time.Duration
}

// Defaults for the PINGs when no http2KeepAlive says otherwise.
const (
	defaultH2PingInterval = 30 * time.Second
	defaultH2PingTimeout  = 15 * time.Second
)

// h2PingOf reads connectionPool.http.http2KeepAlive.
func h2PingOf(p *traffic.TrafficPolicy) h2Ping {
	if p == nil || p.ConnectionPool == nil || p.ConnectionPool.HTTP == nil || p.ConnectionPool.HTTP.HTTP2KeepAlive == nil {
		return h2Ping{}
	}
	var hp h2Ping
	if ka := p.ConnectionPool.HTTP.HTTP2KeepAlive; ka.Interval != nil {
		hp.interval = ka.Interval.Duration
	}
	if ka := p.ConnectionPool.HTTP.HTTP2KeepAlive; ka.Timeout != nil {
		hp.timeout = ka.Timeout.Duration
	}
	return hp
}

// config is the transport's HTTP/2 settings with these PINGs (net/http's
// SendPingTimeout and PingTimeout).
func (hp h2Ping) config() *http.HTTP2Config {
	c := &http.HTTP2Config{MaxConcurrentStreams: 250, SendPingTimeout: defaultH2PingInterval, PingTimeout: defaultH2PingTimeout}
	if hp.interval > 0 {
		c.SendPingTimeout = hp.interval
	}
	if hp.timeout > 0 {
		c.PingTimeout = hp.timeout
	}
	return c
}

// meshSNI is the sni of a policy's ISTIO_MUTUAL tls (Istio sends it in
// the mesh's mTLS ClientHello), "" when it gives none.
func meshSNI(p *traffic.TrafficPolicy) string {
	if p == nil || p.TLS == nil || p.TLS.Mode != traffic.TLSIstioMutual {
		return ""
	}
	return p.TLS.SNI
}

// Load balancer names after defaults are resolved.
const (
	lbPeakEWMA     = "PEAK_EWMA"
	lbRoundRobin   = "ROUND_ROBIN"
	lbLeastRequest = "LEAST_REQUEST"
	lbRandom       = "RANDOM"
)

func lbOf(p *traffic.TrafficPolicy) string {
	if p == nil || p.LoadBalancer == nil {
		return lbPeakEWMA
	}
	switch p.LoadBalancer.Simple {
	case "ROUND_ROBIN":
		return lbRoundRobin
	case "LEAST_REQUEST", "LEAST_CONN":
		return lbLeastRequest
	case "RANDOM":
		return lbRandom
	}
	return lbPeakEWMA
}

// Pick chooses an endpoint, avoiding ejected ones and, when it can, the
// ones already tried for this request. With every endpoint ejected it
// uses them all (Envoy's panic mode): some traffic beats none. A key (the
// request's consistentHash key, hashPolicy) picks among those by
// rendezvous hashing; "" leaves the choice to the cluster's balancer.
func (c *Cluster) Pick(tried []*Endpoint, key string) *Endpoint {
	if len(c.Eps) == 1 {
		// Whatever its state, the only endpoint is the answer.
		return c.Eps[0]
	}
	now := c.now()
	cands := make([]*Endpoint, 0, len(c.Eps))
	for _, e := range c.Eps {
		if !e.ejected(now) && !slices.Contains(tried, e) {
			cands = append(cands, e)
		}
	}
	if len(cands) == 0 {
		for _, e := range c.Eps {
			if !slices.Contains(tried, e) {
				cands = append(cands, e)
			}
		}
	}
	if len(cands) == 0 {
		cands = c.Eps
	}
	if len(cands) == 0 {
		return nil
	}
	if len(cands) == 1 {
		return cands[0]
	}
	if key != "" {
		return rendezvous(cands, key)
	}
	if e, ok := c.warmPick(cands, now); ok {
		return e
	}
	switch c.lb {
	case lbRoundRobin:
		return cands[int(c.rr.Add(1)-1)%len(cands)]
	case lbRandom:
		return cands[rand.IntN(len(cands))]
	}
	// Power of two choices: by requests in flight (LEAST_REQUEST) or by
	// peak-EWMA latency times load (the default).
	a, b := cands[rand.IntN(len(cands))], cands[rand.IntN(len(cands))]
	for b == a {
		b = cands[rand.IntN(len(cands))]
	}
	if c.lb == lbLeastRequest {
		if b.Active.Load() < a.Active.Load() {
			return b
		}
		return a
	}
	if b.cost() < a.cost() {
		return b
	}
	return a
}

// Pool is a DestinationRule's connectionPool for one cluster: requests in
// flight are capped by maxConnections and http2MaxRequests (between
// sidecars requests share multiplexed connections, so each request in
// flight stands for a connection's worth of concurrency, as with HTTP/1.1
// upstreams in Istio), http1MaxPendingRequests more may wait, and the rest
// overflow at once with 503.
type Pool struct {
	slots      chan struct{} // nil: unlimited
	maxPending int64
	pending    atomic.Int64
	PerConn    int // maxRequestsPerConnection (0: no limit)
	maxRetries int64
	retries    atomic.Int64
	active     atomic.Int64
	// release ends a request Acquire let through, made once (NewPool):
	// a closure per request was an allocation per request.
	release func()
}

// Istio's default for http1MaxPendingRequests is effectively unlimited;
// Envoy's circuit breaker default is 1024.
const defaultMaxPending = 1024

// NewPool is the pool of connectionPool p (nil: Istio's defaults).
func NewPool(p *traffic.TrafficPolicy) *Pool {
	pl := &Pool{maxPending: defaultMaxPending}
	defer pl.makeRelease()
	if p == nil || p.ConnectionPool == nil {
		return pl
	}
	limit := int32(0)
	if t := p.ConnectionPool.TCP; t != nil && t.MaxConnections > 0 {
		limit = t.MaxConnections
	}
	if h := p.ConnectionPool.HTTP; h != nil {
		if h.HTTP2MaxRequests > 0 && (limit == 0 || h.HTTP2MaxRequests < limit) {
			limit = h.HTTP2MaxRequests
		}
		if h.HTTP1MaxPendingRequests > 0 {
			pl.maxPending = int64(h.HTTP1MaxPendingRequests)
		}
		pl.PerConn = int(h.MaxRequestsPerConnection)
		pl.maxRetries = int64(h.MaxRetries)
	}
	if limit > 0 {
		pl.slots = make(chan struct{}, limit)
	}
	return pl
}

// OverflowError is the pool refusing a request.
type OverflowError struct{}

// Error says so.
func (OverflowError) Error() string { return "upstream connection pool overflow" }

// Limit is the pool's cap on requests in flight (0: none).
func (p *Pool) Limit() int { return cap(p.slots) }

// makeRelease makes the pool's release, once its slots are known.
func (p *Pool) makeRelease() {
	if p.slots == nil {
		p.release = func() { p.active.Add(-1) }
		return
	}
	p.release = func() { <-p.slots; p.active.Add(-1) }
}

// Acquire takes a slot, waiting if the pending queue has room. The func
// it returns gives the slot back; call it once per Acquire.
func (p *Pool) Acquire(ctx context.Context) (func(), error) {
	p.active.Add(1)
	release := p.release
	if p.slots == nil {
		return release, nil
	}
	select {
	case p.slots <- struct{}{}:
		return release, nil
	default:
	}
	if p.pending.Add(1) > p.maxPending {
		p.pending.Add(-1)
		p.active.Add(-1)
		return nil, OverflowError{}
	}
	defer p.pending.Add(-1)
	select {
	case p.slots <- struct{}{}:
		return release, nil
	case <-ctx.Done():
		p.active.Add(-1)
		return nil, ctx.Err()
	}
}

// Retry budget (Envoy's defaults): retries in flight may be at most 20% of
// requests in flight, but 3 are always allowed; maxRetries caps them too.
// A retry counts from when it is sent until its answer, not while it waits
// out its backoff.
const (
	retryBudgetPercent = 20
	minRetryConcurrent = 3
)

// CanRetry reports whether the retry budget allows one more retry now.
func (p *Pool) CanRetry() bool {
	limit := max(int64(minRetryConcurrent), p.active.Load()*retryBudgetPercent/100)
	if p.maxRetries > 0 {
		limit = min(limit, p.maxRetries)
	}
	return p.retries.Load() < limit
}

// StartRetry counts a retry in flight until the func it returns is called.
func (p *Pool) StartRetry() func() {
	p.retries.Add(1)
	return func() { p.retries.Add(-1) }
}

// outlierPolicy is a DestinationRule's outlierDetection, with Istio's
// defaults filled in.
type outlierPolicy struct {
	consec5xx, consecGW int
	interval, base      time.Duration
	maxPercent          int
}

func outlierOf(p *traffic.TrafficPolicy) *outlierPolicy {
	if p == nil || p.OutlierDetection == nil {
		return nil
	}
	od := p.OutlierDetection
	o := &outlierPolicy{consec5xx: 5, interval: 10 * time.Second, base: 30 * time.Second, maxPercent: 10}
	if od.Consecutive5xxErrors != nil {
		o.consec5xx = int(*od.Consecutive5xxErrors)
	}
	if od.ConsecutiveGatewayErrors != nil {
		o.consecGW = int(*od.ConsecutiveGatewayErrors)
	}
	if od.Interval != nil {
		o.interval = od.Interval.Duration
	}
	if od.BaseEjectionTime != nil {
		o.base = od.BaseEjectionTime.Duration
	}
	if od.MaxEjectionPercent != nil {
		o.maxPercent = int(*od.MaxEjectionPercent)
	}
	return o
}

// Record updates an endpoint's error streak after a request and ejects it
// when a streak reaches the policy's threshold. It reports an ejection.
func (c *Cluster) Record(e *Endpoint, status int, connectFailed bool) bool {
	o := c.outlier
	if o == nil {
		return false
	}
	gateway := connectFailed || status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
	e.mu.Lock()
	if connectFailed || status >= 500 {
		e.consec5xx++
	} else {
		e.consec5xx = 0
	}
	if gateway {
		e.consecGW++
	} else {
		e.consecGW = 0
	}
	trip := (o.consec5xx > 0 && e.consec5xx >= o.consec5xx) || (o.consecGW > 0 && e.consecGW >= o.consecGW)
	e.mu.Unlock()
	if !trip {
		return false
	}
	now := c.now()
	ejected := 0
	for _, x := range c.Eps {
		if x != e && x.ejected(now) {
			ejected++
		}
	}
	// Never more than maxEjectionPercent, but at least one host may go.
	if allowed := max(1, len(c.Eps)*o.maxPercent/100); ejected >= allowed || o.maxPercent == 0 {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Before(e.ejectedUntil) {
		return false
	}
	e.ejections = o.multiplier(e.ejections, now.Sub(e.ejectedUntil)) + 1
	until := now.Add(o.ejectionTime(e.ejections))
	// Hosts come back at the detector's interval ticks, as in Envoy.
	if o.interval > 0 {
		until = until.Truncate(o.interval).Add(o.interval)
	}
	e.ejectedUntil, e.consec5xx, e.consecGW = until, 0, 0
	return true
}

// defaultMaxEjectionTime is Envoy's max_ejection_time when unset (Istio
// does not expose it): 300s, or baseEjectionTime when that is longer.
const defaultMaxEjectionTime = 300 * time.Second

// multiplier is an endpoint's count of ejections after it has been back in
// the pool for back: one less per interval, as Envoy decrements it at each
// interval the host is not ejected.
func (o *outlierPolicy) multiplier(ejections int, back time.Duration) int {
	if o.interval <= 0 || back < o.interval {
		return ejections
	}
	return max(0, ejections-int(min(back/o.interval, time.Duration(ejections))))
}

// ejectionTime is how long the nth ejection lasts: baseEjectionTime × n,
// capped at max(defaultMaxEjectionTime, baseEjectionTime) (Envoy's rule),
// computed without overflow for any duration a resource can give.
func (o *outlierPolicy) ejectionTime(n int) time.Duration {
	limit := max(defaultMaxEjectionTime, o.base)
	if o.base <= 0 || time.Duration(n) > limit/o.base {
		return limit
	}
	return o.base * time.Duration(n)
}

// Clusters caches clusters and their pools; a pool survives a config
// change as long as its limits do.
type Clusters struct {
	mu    sync.Mutex
	pools map[string]*Pool
	keys  map[string]string
	rr    map[string]*atomic.Uint64
}

// NewClusters is an empty cache.
func NewClusters() *Clusters {
	return &Clusters{pools: map[string]*Pool{}, keys: map[string]string{}, rr: map[string]*atomic.Uint64{}}
}

// Len is how many clusters' pools and balancer counters the cache keeps.
func (cs *Clusters) Len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return max(len(cs.pools), len(cs.rr))
}

// PoolFor is the pool and round-robin counter of the cluster of key under
// p: the ones it had before while its limits are the same.
func (cs *Clusters) PoolFor(key string, p *traffic.TrafficPolicy) (*Pool, *atomic.Uint64) {
	sig := ""
	if p != nil && p.ConnectionPool != nil {
		sig = fmtPool(p.ConnectionPool)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.rr[key] == nil {
		cs.rr[key] = new(atomic.Uint64)
	}
	if pl, ok := cs.pools[key]; ok && cs.keys[key] == sig {
		return pl, cs.rr[key]
	}
	pl := NewPool(p)
	cs.pools[key], cs.keys[key] = pl, sig
	return pl, cs.rr[key]
}

func fmtPool(cp *traffic.ConnectionPool) string {
	var s []any
	if cp.TCP != nil {
		s = append(s, cp.TCP.MaxConnections)
	}
	if cp.HTTP != nil {
		h := *cp.HTTP
		h.HTTP2KeepAlive = nil // a pointer, and the pool's limits ignore it
		s = append(s, h)
	}
	return fmt.Sprintf("%v", s)
}

// kindOf picks the connection a request travels on between sidecars:
// HTTP/1.x stays HTTP/1.1 (the lean client), HTTP/2 and gRPC go over
// HTTP/2.
func kindOf(r *http.Request) int {
	if r.ProtoMajor == 1 && hop.ProtocolOf(r) != protocol.GRPC {
		return ViaH1
	}
	return ViaH2
}
