package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-mesh/sigil/internal/ascii"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/protocol"
	"github.com/sigil-mesh/sigil/proxy/h1"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/proxy/loop"
	"github.com/sigil-mesh/sigil/proxy/upstream"
	"github.com/sigil-mesh/sigil/traffic"
	"go.opentelemetry.io/otel/trace"
)

// The outbound's HTTP/1.1 path on an event loop (--outbound-event-loop):
// the app's HTTP/1.x connections go, once their first bytes show they
// are not h2c, to a proxy/loop.Loop, which reads every request head,
// relays bodies and answers, and keeps the mTLS connections to other
// sidecars in a pool of its own (one per endpoint, server name and
// identity: loopUpstream). Each request goes through the goroutine
// path's steps (ServeHTTP, routeKey), on an *http.Request read from the
// head, as far as a route's features are ones the loop carries: a
// route's match, its redirect or direct response, rewrite and request
// headers, the weighted pick of a destination, the endpoint's pick
// (balancer, consistent hash without a cookie, outlier detection),
// retries on a failed connection, a reset or a status (with the body,
// up to the goroutine path's 1 MiB), the route's timeout. A request
// that needs more (fault injection, mirroring, CORS, response header
// changes, a per-try timeout, HTTP/2 between the sidecars, a connection
// pool's limits, a host outside the mesh, an unknown host, gRPC) is
// handed, with the rest of its connection, to the goroutine path
// (loop.Verdict.Handoff), which serves it exactly as without the loop;
// docs/limits.md lists the differences.

// startLoop starts the outbound's loop.
func (o *outbound) startLoop() error {
	l, err := o.newLoop()
	if err != nil {
		return err
	}
	o.loop = l
	o.p.loopGauge("outbound", l)
	return nil
}

// loopGauge registers sigil_event_loop_connections for listener's loop.
func (p *Proxy) loopGauge(listener string, l *loop.Loop) {
	p.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "sigil_event_loop_connections",
		Help:        "Connections a listener's event loop serves (--inbound-event-loop, --outbound-event-loop), as of its last batch of events.",
		ConstLabels: prometheus.Labels{"listener": listener},
	}, func() float64 { return float64(l.Conns()) }))
}

// loopHandoffs registers sigil_event_loop_handoffs_total for listener's
// loop and returns it.
func (p *Proxy) loopHandoffs(listener string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "sigil_event_loop_handoffs_total",
		Help:        "Connections a listener's event loop handed to the goroutine path, for a request it does not carry (an upgrade, CONNECT, HTTP/1.0; on the outbound, a route's feature the loop lacks).",
		ConstLabels: prometheus.Labels{"listener": listener},
	})
	p.metrics.reg.MustRegister(c)
	return c
}

// newLoop starts the outbound's loop, with the goroutine path's limits
// (the lean server's header and keep-alive timeouts, the listener's idle
// timeout, the minimum request body rate).
func (o *outbound) newLoop() (*loop.Loop, error) {
	cfg := o.p.cfg
	h := &outboundLoop{o: o, ups: map[upstreamKey]*loopUpstream{}}
	handoffs := o.p.loopHandoffs("outbound")
	return loop.New(loop.Config{
		Handler: h,
		Handoff: func(c net.Conn, value any) {
			handoffs.Inc()
			ctx := context.Background()
			if d, ok := value.(routedDest); ok {
				ctx = context.WithValue(ctx, ctxKey{}, d)
			}
			o.fast.Serve(upstream.WithRequestCtx(withConnAbort(ctx, c)), c)
		},
		BadGateway: upstreamFailed,
		// As the goroutine path keeps a body to send again (readReplayable).
		ResendBodyLimit: maxReplayBody,
		HandoffWrap:     func(c net.Conn) net.Conn { return idleListener{idle: cfg.IdleTimeout}.wrap(c) },
		HeaderTimeout:   leanHeaderTimeout,
		IdleTimeout:     leanIdleTimeout,
		ReadIdleTimeout: cfg.IdleTimeout,
		MinBodyRate:     int64(cfg.MinRequestBodyRate),
		BodyRateWindow:  cfg.MinRequestBodyGrace,
		ProtocolError:   o.p.metrics.protocolError("outbound"),
		Log:             o.p.log.With("part", "outbound-loop"),
	})
}

// upstreamFailed is the outbound loop's answer when a peer sidecar
// hangs up or breaks HTTP/1.1 before its answer began (the goroutine
// path's sendFailed answers 503 too).
var upstreamFailed = h1.AppendResponse(nil, http.StatusServiceUnavailable, http.Header{"Content-Type": {"text/plain; charset=utf-8"},
	"X-Content-Type-Options": {"nosniff"}, "Connection": {"close"}}, []byte("sigil: upstream failed before its answer\n"), false)

// outboundLoop decides the requests of the outbound's loop, on its
// goroutine (so its fields need no lock).
type outboundLoop struct {
	o    *outbound
	head []byte // the last head forwarded: the loop copies it at once
	// ups holds the loop's upstream of each endpoint it sent to, so a
	// request does not allocate one; cleared when it grows past
	// maxLoopUpstreams (endpoints come and go with discovery).
	ups map[upstreamKey]*loopUpstream
	// timeouts holds the answers to requests past the route's timeout
	// (timeoutAnswer): to a GET, say, and to a HEAD.
	timeouts [2][]byte
}

// maxLoopUpstreams bounds outboundLoop.ups.
const maxLoopUpstreams = 4096

// upstreamKey is what an upstream connection of the loop is fixed to: an
// endpoint (its address and the identity it must prove) and the server
// name its ClientHello carries.
type upstreamKey struct {
	ep  *upstream.Endpoint
	sni string
}

// upstreamFor is the loop's upstream for ep under cluster c's sni.
func (h *outboundLoop) upstreamFor(ep *upstream.Endpoint, sni string) *loopUpstream {
	k := upstreamKey{ep, sni}
	if u := h.ups[k]; u != nil {
		return u
	}
	if len(h.ups) >= maxLoopUpstreams {
		clear(h.ups)
	}
	u := &loopUpstream{o: h.o, ep: ep, sni: sni, key: ep.Addr + "\x00" + sni + "\x00" + ep.ID.String()}
	h.ups[k] = u
	return u
}

// loopUpstream is one endpoint's sidecar as the loop dials it
// (loop.Upstream): mTLS that must prove the endpoint's identity (secure
// naming) and speak HTTP/1.1's ALPN, within the outbound's cap on
// connections per destination (upstream.Conns), carrying requests only
// until our certificate expires (the loop also stops at the peer's).
type loopUpstream struct {
	o   *outbound
	ep  *upstream.Endpoint
	sni string
	key string
}

// Key names the upstream's connections: address, server name, identity.
func (u *loopUpstream) Key() string { return u.key }

// Dial opens the TCP connection within the destination's cap and gives
// the TLS configuration the loop's handshake uses.
func (u *loopUpstream) Dial(ctx context.Context) (net.Conn, *tls.Config, time.Time, error) {
	own := u.o.p.id.notAfter() // ours now, or an older one: a safe bound
	c, err := u.o.upstream.Dial(ctx, u.ep.Addr)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	cfg := u.o.p.id.clientTLS(u.ep.ID, alpnH1, u.sni)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.NegotiatedProtocol != alpnH1 {
			return errors.New("peer sidecar does not speak " + alpnH1)
		}
		return nil
	}
	return c, cfg, own, nil
}

// The loop's optional Exchange interfaces an outboundCall serves.
var _ interface {
	loop.Retrier
	loop.Resender
	loop.Backoffer
	loop.UnreachableAnswerer
} = (*outboundCall)(nil)

// outboundCall is one request on the outbound's loop, from its head to
// its record.
type outboundCall struct {
	o       *outbound
	h       *outboundLoop
	r       *http.Request
	start   time.Time
	rec     statusRecorder
	answer  answerWriter
	svc     naming.Service
	proto   string
	span    trace.Span
	rt      *traffic.Route
	dest    string // the destination's service name, for answers
	cl      *upstream.Cluster
	hashKey string
	// ep is the endpoint of the attempt in flight (nil: none), began
	// when it was picked; tried lists the endpoints tried so far.
	ep       *upstream.Endpoint
	began    time.Time
	tried    []*upstream.Endpoint
	attempts int // retries allowed after the first try
	// once: the request's body is chunked, which the goroutine path
	// never keeps to send again (readReplayable): not resent on its
	// answer (a failed connection, before any byte, still is).
	once    bool
	attempt int
	release func() // the cluster pool's slot
	retry   func() // the retry in flight's count in the budget (nil: none)
}

// Request routes one request head; see the section comment.
func (h *outboundLoop) Request(caller *loop.Caller, head *h1.Head) loop.Verdict {
	r, err := head.Request()
	if err != nil {
		// As the goroutine path's server: refused before any handler.
		return loop.Verdict{Answer: []byte(h1.ErrorAnswer(err)), Close: true}
	}
	// As net/http's server sets it: consistentHash's useSourceIp reads it.
	r.RemoteAddr = caller.RemoteAddr
	if d, ok := caller.Value.(routedDest); ok {
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, d))
	}
	c := &outboundCall{o: h.o, h: h, r: r, start: time.Now()}
	c.rec.ResponseWriter = &c.answer
	return c.route(head)
}

// handoff is the verdict for a request the loop does not carry.
var handoff = loop.Verdict{Handoff: true}

// route runs ServeHTTP's and routeKey's steps on the loop, as far as it
// carries them, and decides the request.
func (c *outboundCall) route(head *h1.Head) loop.Verdict {
	o, r := c.o, c.r
	c.proto = hop.ProtocolOf(r)
	svc, port, err := o.destOf(r)
	if err != nil || c.proto == protocol.GRPC {
		// Hosts outside the mesh and refused names: the goroutine path.
		return handoff
	}
	c.svc = svc
	if err := hop.TakeConnectionOptions(r.Header); err != nil {
		c.rec.setFlag(flagBadRequest)
		hop.WriteError(&c.rec, r, http.StatusBadRequest, "sigil: "+err.Error())
		return c.answered()
	}
	hop.DropForgedIdentity(r.Header)
	if _, err := o.p.normalizeTarget(r); err != nil {
		c.rec.setFlag(flagBadRequest)
		refuseTarget(&c.rec, r, err)
		return c.answered()
	}
	st := o.state.Load()
	key := svc.String()
	delete(r.Header, hop.XFCC)
	m, answered := o.matchRoute(&c.rec, r, st, svc, key, uint32(port))
	if !answered && !loopCarries(m) {
		return handoff
	}
	if o.p.trace != nil {
		// Not before the hand-off: a span begun and never ended is never
		// exported, but it would have named the request twice.
		c.span = o.p.trace.start(r, trace.SpanKindClient, "outbound", svc.Name)
	}
	if answered || answerLocally(&c.rec, r, m) {
		return c.answered()
	}
	if c.splitHandedOff(st, m, uint32(port)) {
		c.span = nil
		return handoff
	}
	dest := m.Pick()
	c.rec.subset = dest.Subset
	if destHandedOff(dest) {
		c.span = nil
		return handoff
	}
	if o.rewriteRequest(&c.rec, r, m, dest) {
		return c.answered()
	}
	cl := o.pickCluster(&c.rec, r, st, dest, uint32(port))
	if cl == nil {
		return c.answered()
	}
	hashKey, ok := loopDials(cl, r)
	if !ok {
		c.span = nil
		return handoff
	}
	// Not hop.NoDefaultUserAgent: no Go transport writes this head, and
	// AppendRequestHead would write the empty field it sets.
	hop.StripRequestHeaders(r.Header)
	c.release, _ = cl.Pool.Acquire(r.Context()) // no limit: never waits, never fails
	c.rt, c.cl, c.hashKey, c.attempts, c.once, c.dest = m.Route, cl, hashKey, m.Attempts, head.Chunked, dest.Service
	c.pick()
	h := c.h
	h.head = h1.AppendRequestHead(h.head[:0], r, head)
	return loop.Verdict{Head: h.head, Upstream: h.upstreamFor(c.ep, cl.SNI), Timeout: m.Timeout,
		TimeoutAnswer: c.timeoutAnswer(),
		Exchange:      c}
}

// splitHandedOff reports whether route m splits its requests between
// destinations of which one needs the goroutine path (a host outside
// the mesh, response header changes, a cluster the loop does not dial
// as it is: HTTP/2, a pool's limits, a cookie to mint). Such a route's
// requests are all handed off, before the loop's own pick: the
// goroutine path picks again, and handing off only the requests whose
// pick fell on such a destination would give it the square of its
// weight. The checks after the pick (route) stay, for a one-way route.
func (c *outboundCall) splitHandedOff(st *meshState, m traffic.Matched, port uint32) bool {
	total := 0
	for _, d := range m.Dests {
		total += d.Weight
	}
	if len(m.Dests) < 2 || total == 0 { // one destination: Pick's only one
		return false
	}
	for _, d := range m.Dests {
		if d.Weight == 0 {
			continue // never picked
		}
		if destHandedOff(d) {
			return true
		}
		cl := c.o.clusterAt(st, naming.Service{Name: d.Service, Namespace: d.Namespace}, d.Subset, cmp.Or(d.Port, port))
		if cl == nil || len(cl.Eps) == 0 {
			continue // answered 503 on either path
		}
		if _, ok := loopDials(cl, c.r); !ok {
			return true
		}
	}
	return false
}

// destHandedOff reports whether a request to d needs the goroutine path:
// a host outside the mesh, or response header changes.
func destHandedOff(d traffic.WeightedDest) bool {
	return d.Outside != "" || hasResponseOps(d.Headers)
}

// loopDials reports whether the loop sends r to cluster cl as it is
// (HTTP/1.1 between the sidecars, no pool limits, no consistent-hash
// cookie to mint), and r's hash key.
func loopDials(cl *upstream.Cluster, r *http.Request) (hashKey string, ok bool) {
	hashKey, cookie := cl.Hash.Key(r)
	return hashKey, cl.KindOf(r) == upstream.ViaH1 && cl.Pool.Limit() == 0 && cl.Pool.PerConn == 0 && cookie == nil
}

// loopCarries reports whether the loop carries requests of route m
// (the section comment lists what it does not).
func loopCarries(m traffic.Matched) bool {
	return m.AbortPct == 0 && (m.Delay == 0 || m.DelayPct == 0) && m.Mirror == nil && m.CORS == nil &&
		m.PerTry == 0 && !hasResponseOps(m.Headers)
}

// hasResponseOps reports whether h changes response headers.
func hasResponseOps(h *traffic.Headers) bool {
	return h != nil && h.Response != nil && (len(h.Response.Set) > 0 || len(h.Response.Add) > 0 || len(h.Response.Remove) > 0)
}

// pick chooses the endpoint of the next attempt.
func (c *outboundCall) pick() {
	c.ep = c.cl.Pick(c.tried, c.hashKey)
	c.tried = append(c.tried, c.ep)
	c.ep.Active.Add(1)
	c.began = time.Now()
}

// endAttempt ends the attempt in flight: outlier detection learns its
// outcome (status 0: no answer; connectFailed: no connection).
func (c *outboundCall) endAttempt(status int, connectFailed bool) {
	ep := c.ep
	if ep == nil {
		return
	}
	c.ep = nil
	ep.Active.Add(-1)
	if status > 0 {
		ep.Observe(time.Since(c.began), time.Now())
	}
	c.o.recordOutcome(c.cl, ep, status, connectFailed)
	if c.retry != nil {
		c.retry()
		c.retry = nil
	}
}

// Unreachable is told that an endpoint could not be reached: the route's
// retries (connect-failure and what covers it, within the pool's budget)
// pick another endpoint, as the goroutine path's tries do.
func (c *outboundCall) Unreachable(_ loop.Upstream, err error) loop.Upstream {
	c.o.p.log.Debug("upstream unreachable", "service", c.cl.Service, "endpoint", c.ep.Addr, "error", err)
	c.endAttempt(0, true)
	if !c.mayRetry(c.rt.RetryOn.Failure(traffic.FailConnect)) {
		return nil
	}
	c.pick()
	return c.h.upstreamFor(c.ep, c.cl.SNI)
}

// Answered is told the status of an answer (0: the peer hung up before
// it began) to a request the loop can send again: one the route's
// retryOn retries (a status, a reset) goes to another endpoint while
// attempts and the budget last, as the goroutine path's tries do (an
// answer with x-envoy-ratelimited only under envoy-ratelimited:
// RetryOn.Response).
func (c *outboundCall) Answered(status int, head *h1.Head) loop.Upstream {
	covered := status == 0 && c.rt.RetryOn.Failure(traffic.FailReset) ||
		status > 0 && c.rt.RetryOn.Response(status, -1, rateLimited(head))
	if !covered || c.once || c.attempt >= c.attempts {
		return nil
	}
	ep := c.ep
	c.endAttempt(status, false)
	if !c.mayRetry(true) {
		if status > 0 {
			c.rec.peer = ep.ID // the answer relayed is ep's (Done's answeredBy sees no attempt)
		}
		return nil
	}
	c.pick()
	return c.h.upstreamFor(c.ep, c.cl.SNI)
}

// Backoff is the wait before the retry Unreachable or Answered just
// named: the goroutine path's (retryBackoff, Envoy's), after the first
// try for the first retry.
func (c *outboundCall) Backoff() time.Duration { return retryBackoff(c.attempt - 1) }

// mayRetry reports whether one more attempt may go (retryOn covers the
// failure, attempts are left, the budget allows it), counting it.
func (c *outboundCall) mayRetry(covered bool) bool {
	if !covered || c.attempt >= c.attempts {
		return false
	}
	if !c.cl.Pool.CanRetry() {
		c.o.countRetry(c.cl, true)
		return false
	}
	c.attempt++
	c.retry = c.cl.Pool.StartRetry()
	c.o.countRetry(c.cl, false)
	return true
}

// Done records the call once the answer is relayed whole, or the
// exchange ended without one, with the goroutine path's flags.
func (c *outboundCall) Done(status int, err error) {
	switch {
	case err == nil:
		c.answeredBy()
		c.endAttempt(status, false)
	case errors.Is(err, loop.ErrTimeout):
		c.endAttempt(0, false)
		c.rec.setFlag(flagTimeout)
	case errors.Is(err, loop.ErrBadRequest):
		// The app's body broke before the answer began: the loop
		// answered it; the endpoint neither answered nor failed.
		c.endAttempt(0, false)
		c.rec.setFlag(flagBadRequest)
	case errors.Is(err, loop.ErrUnreachable):
		c.endAttempt(0, true) // no-op after Unreachable
		c.rec.setFlag(flagUpstreamFail)
	case status == 0:
		c.endAttempt(0, false)
		c.rec.setFlag(flagDownstreamEnd)
	case errors.Is(err, loop.ErrCallerHungUp):
		// The app left within the answer: the endpoint answered.
		c.answeredBy()
		c.endAttempt(status, false)
		c.rec.setFlag(flagDownstreamEnd)
	case status == http.StatusServiceUnavailable:
		// The loop's own answer (Config.BadGateway): the peer sidecar
		// hung up or broke HTTP/1.1 before its answer began, as
		// sendFailed answers on the goroutine path.
		c.endAttempt(0, false)
		c.rec.setFlag(flagUpstreamFail)
	default:
		c.answeredBy()
		c.endAttempt(status, false)
		c.rec.setFlag(flagUpstreamReset)
	}
	if c.release != nil {
		c.release()
	}
	c.rec.code = status
	done := c.o.record(&c.rec, c.svc, "", c.proto)
	if status == 0 {
		done.code = 0
	}
	c.o.p.observe(done, c.r, c.start, "")
	if c.span != nil {
		c.o.p.trace.end(c.span, c.rec.status(), "")
	}
}

// answeredBy notes the identity of the endpoint that answered (the one
// its handshake proved, or zero when it may be any of the trust domain).
func (c *outboundCall) answeredBy() {
	if c.ep != nil {
		c.rec.peer = c.ep.ID
	}
}

// answered is the verdict for a request the outbound answered itself
// (into c.answer), recorded at once.
func (c *outboundCall) answered() loop.Verdict {
	c.o.p.observe(c.o.record(&c.rec, c.svc, "", c.proto), c.r, c.start, "")
	if c.span != nil {
		c.o.p.trace.end(c.span, c.rec.status(), "")
	}
	return loop.Verdict{Answer: c.answer.bytes(c.r)}
}

// UnreachableAnswer is the goroutine path's answer (sendFailed) when no
// endpoint could be reached: 503 naming the service and the reason (a
// refused connection, a handshake that proved another identity).
func (c *outboundCall) UnreachableAnswer(err error) []byte {
	var a answerWriter
	hop.WriteError(&a, c.r, http.StatusServiceUnavailable, "sigil: upstream "+c.dest+" failed: "+reasonOf(err))
	return a.bytes(c.r)
}

// timeoutAnswer is the goroutine path's answer when the route's timeout
// passes (sendFailed: 504), for c's request: kept, one for HEAD and one
// for the rest, since a request's verdict names it before it is sent.
func (c *outboundCall) timeoutAnswer() []byte {
	isHEAD := 0
	if c.r.Method == http.MethodHead {
		isHEAD = 1
	}
	h := c.h
	if h.timeouts[isHEAD] == nil {
		var a answerWriter
		hop.WriteError(&a, c.r, http.StatusGatewayTimeout, "sigil: upstream request timeout")
		h.timeouts[isHEAD] = a.bytes(c.r)
	}
	return h.timeouts[isHEAD]
}

// limitedHeader is an answer's header as RetryOn.Response reads it when
// the answer carries x-envoy-ratelimited.
var limitedHeader = http.Header{"X-Envoy-Ratelimited": nil}

// rateLimited is limitedHeader when head, an answer's, has an
// x-envoy-ratelimited field; nil otherwise.
func rateLimited(head *h1.Head) http.Header {
	if head == nil {
		return nil
	}
	for i := range head.Len() {
		if name, _ := head.Field(i); ascii.EqualFold(name, "x-envoy-ratelimited") {
			return limitedHeader
		}
	}
	return nil
}
