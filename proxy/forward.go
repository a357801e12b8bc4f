package proxy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/protocol"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/proxy/upstream"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/trace"
)

// Limits of the request path.
const (
	maxReplayBody      = 1 << 20 // bodies up to this size are kept for retries and mirrors
	maxMirrorsInFlight = 64      // beyond this, mirrored copies are dropped, never queued
	mirrorTimeout      = 5 * time.Second
	retryBackoffBase   = 25 * time.Millisecond
	retryBackoffMax    = 10 * retryBackoffBase // Envoy's max_interval default
)

// ServeHTTP routes one request from the app: VirtualService match, fault
// injection, redirect, rewrite, header changes, mirroring, then the chosen
// destination with retries, timeouts, the connection pool and outlier
// detection of its DestinationRule.
func (o *outbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method == http.MethodConnect {
		o.connect(w, r)
		return
	}
	rec := &statusRecorder{ResponseWriter: w}
	proto := hop.ProtocolOf(r)
	svc, port, err := o.destOf(r)
	// A host outside the mesh whose VirtualService has routes for this
	// sidecar and port is routed as a service is (outside.go).
	outside, port := o.outsideRouted(r, err, port)
	if err != nil && outside == "" {
		if label, ok := o.externalOf(rec, r, err); ok {
			o.p.observe(o.record(rec, naming.Service{}, label, proto), r, start, "")
			return
		}
		// A fixed label: the caller's host must not mint metric series.
		rec.setFlag(flagNoRoute)
		if errors.Is(err, naming.ErrMalformed) {
			rec.setFlag(flagBadRequest)
		}
		refuseName(rec, r, err)
		o.p.observe(o.record(rec, naming.Service{}, unknownService, proto), r, start, "")
		return
	}
	defer func() {
		if v := recover(); v != nil {
			o.p.observeAborted(rec, func(w *statusRecorder) requestRecord { return o.record(w, svc, outside, proto) }, r, start)
			panic(v)
		}
	}()
	// Before the sidecar adds headers of its own (trace context, route
	// headers), so the app's Connection header cannot remove them.
	if err := hop.TakeConnectionOptions(r.Header); err != nil {
		rec.setFlag(flagBadRequest)
		hop.WriteError(rec, r, http.StatusBadRequest, "sigil: "+err.Error())
		o.p.observe(o.record(rec, svc, outside, proto), r, start, "")
		return
	}
	hop.DropForgedIdentity(r.Header)
	if proto == protocol.GRPC {
		var cancel context.CancelFunc
		r, cancel = hop.WithGRPCDeadline(r, start)
		defer cancel()
	}
	// Routes match, and the peer sidecar authorizes, the path forwarded.
	if _, err := o.p.normalizeTarget(r); err != nil {
		rec.setFlag(flagBadRequest)
		refuseTarget(rec, r, err)
		o.p.observe(o.record(rec, svc, outside, proto), r, start, "")
		return
	}
	if o.p.trace != nil {
		span := o.p.trace.start(r, trace.SpanKindClient, "outbound", cmp.Or(svc.Name, traffic.HostOfKey(outside)))
		defer func() { o.p.trace.end(span, rec.status(), "") }()
	}
	o.routeKey(rec, r, svc, cmp.Or(outside, svc.String()), uint32(port))
	o.p.observe(o.record(rec, svc, outside, proto), r, start, "")
}

// record is the record of an outbound request for svc, or, when svc is
// zero, for host (an outside host a DestinationRule names, or
// unknownService). A service the mesh does not know (no endpoints, no
// routes) counts as unknownService: the app's hosts must not mint series.
func (o *outbound) record(w *statusRecorder, svc naming.Service, host, proto string) requestRecord {
	if !svc.IsZero() && o.metricService(svc) == unknownService {
		svc, host = naming.Service{}, unknownService
	}
	rec := requestRecord{reporter: reporterSource, source: o.p.id.id.String(), dest: w.peer.String(), service: svc, host: o.hostLabel(host),
		subset: w.subset, route: w.route, protocol: proto, code: w.status(), flags: cmp.Or(w.flags, flagNone)}
	if proto == protocol.GRPC {
		rec.grpcStatus = grpcStatusOfResponse(w.Header())
	}
	return rec
}

// unknownService is the destination label of requests for no mesh service.
const unknownService = "unknown"

// readReplayable keeps a small body so it can be sent again (retries,
// mirror). A large or streaming body is sent once, as it comes.
func readReplayable(r *http.Request) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, true
	}
	if r.ContentLength < 0 || r.ContentLength > maxReplayBody || hop.ProtocolOf(r) == protocol.GRPC && r.ProtoMajor == 2 && r.ContentLength < 0 {
		return nil, false
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxReplayBody+1))
	if err != nil || len(b) > maxReplayBody {
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), r.Body))
		return nil, false
	}
	return b, true
}

// requestCopy is a shallow copy of a request and its URL, made in one
// allocation.
type requestCopy struct {
	req http.Request
	url url.URL
}

// outRequest builds the request to one endpoint: a shallow copy sharing
// r's (already stripped) headers. With r's own context (no route or
// per-try timeout) the copy and its URL are one allocation; another
// context needs WithContext's copy besides.
func outRequest(ctx context.Context, r *http.Request, ep *upstream.Endpoint, body []byte, replay bool) *http.Request {
	cp := &requestCopy{req: *r, url: url.URL{Scheme: "https", Host: ep.Addr, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}}
	out := &cp.req
	if ctx != r.Context() {
		out = out.WithContext(ctx)
	}
	out.URL = &cp.url
	out.Host = r.Host
	out.RequestURI = ""
	out.Close = false // the app's connection may close; the pooled one need not
	if replay {
		out.Body, out.ContentLength = http.NoBody, 0
		if len(body) > 0 {
			out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			out.Body, _ = out.GetBody()
			out.ContentLength = int64(len(body))
		}
	}
	return out
}

// sent is what a response from send holds until it has been copied:
// its body, its attempt's and the route's timeouts and its pool slot. A
// value, not a closure over them: that was an allocation per request.
type sent struct {
	resp                           *http.Response
	tryCancel, releasePool, cancel func()
}

// release closes the response's body, then frees the rest.
func (s sent) release() { s.resp.Body.Close(); s.tryCancel(); s.releasePool(); s.cancel() }

// send sends with retries. It returns the response, the identity of the
// endpoint that gave it (the one its handshake proved, or zero when the
// endpoint accepts any of the trust domain) and what to release when the
// response has been copied.
func (o *outbound) send(r *http.Request, body []byte, replay bool, c *upstream.Cluster, rt *traffic.Route, key string) (*http.Response, spiffeid.ID, sent, error) {
	ctx := r.Context()
	cancel := context.CancelFunc(func() {})
	if rt.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, rt.Timeout)
	}
	releasePool, err := c.Pool.Acquire(ctx)
	if err != nil {
		cancel()
		return nil, spiffeid.ID{}, sent{}, err
	}
	attempts := rt.Attempts
	if !replay {
		attempts = 0
	}
	var triedBuf [4]*upstream.Endpoint
	tried := triedBuf[:0]
	var ep *upstream.Endpoint
	t := tries{rt: rt, attempts: attempts, budget: c.Pool.CanRetry,
		try: func(ctx context.Context, n int) (*http.Response, error) {
			if n > 0 {
				defer c.Pool.StartRetry()()
			}
			ep = c.Pick(tried, key)
			tried = append(tried, ep)
			tr := c.Conns(ep).Get(c.KindOf(r), c.Pool.PerConn)
			ep.Active.Add(1)
			began := time.Now()
			resp, err := tr.RoundTrip(outRequest(ctx, r, ep, body, replay))
			ep.Active.Add(-1)
			if resp != nil {
				ep.Observe(time.Since(began), time.Now())
			}
			return resp, err
		},
		done:    func(status int, connectFailed bool) { o.recordOutcome(c, ep, status, connectFailed) },
		retried: func(exhausted bool) { o.countRetry(c, exhausted) },
	}
	resp, tryCancel, err := t.run(ctx)
	if err != nil {
		releasePool()
		cancel()
		return nil, spiffeid.ID{}, sent{}, err
	}
	return resp, ep.ID, sent{resp: resp, tryCancel: tryCancel, releasePool: releasePool, cancel: cancel}, nil
}

// recordOutcome tells outlier detection how an attempt to ep of c ended
// (status 0: no answer; connectFailed: no connection), and counts and
// logs an ejection it causes: both HTTP/1.1 paths' attempts end here.
func (o *outbound) recordOutcome(c *upstream.Cluster, ep *upstream.Endpoint, status int, connectFailed bool) {
	if c.Record(ep, status, connectFailed) {
		o.p.metrics.ejections.WithLabelValues(c.Service).Inc()
		o.p.log.Warn("endpoint ejected", "service", c.Service, "endpoint", ep.Addr)
	}
}

// countRetry counts a retry to c sent (exhausted false) or one its
// pool's budget refused (true), on either HTTP/1.1 path.
func (o *outbound) countRetry(c *upstream.Cluster, exhausted bool) {
	if exhausted {
		o.p.metrics.retryBudget.WithLabelValues(c.Service).Inc()
		return
	}
	o.p.metrics.retries.WithLabelValues(c.Service).Inc()
}

// upgrade forwards an Upgrade (WebSocket) request over HTTP/1.1 to one
// endpoint; the connection then carries the upgraded protocol both ways.
func (o *outbound) upgrade(w http.ResponseWriter, r *http.Request, c *upstream.Cluster) {
	key, setCookie := c.Hash.Key(r)
	if setCookie != nil {
		w.Header().Add("Set-Cookie", setCookie.String())
	}
	ep := c.Pick(nil, key)
	o.upgradeVia(w, r, c.Conns(ep).Get(upstream.ViaUpgrade, 0), "https", ep.Addr)
}

// upgradeVia forwards an Upgrade request with rt to addr (scheme: over
// TLS or not); the connection then carries the upgraded protocol both
// ways.
func (o *outbound) upgradeVia(w http.ResponseWriter, r *http.Request, rt http.RoundTripper, scheme, addr string) {
	rp := &httputil.ReverseProxy{
		Transport: rt,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = &url.URL{Scheme: scheme, Host: addr, Path: pr.In.URL.Path, RawPath: pr.In.URL.RawPath, RawQuery: pr.In.URL.RawQuery}
			pr.Out.Host = pr.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			hop.WriteError(w, r, http.StatusServiceUnavailable, "sigil: upstream failed: "+reasonOf(err))
		},
		ErrorLog: o.p.httpErrorLog("outbound-upgrade"),
	}
	rp.ServeHTTP(w, r)
}

// mirror sends a copy of the request to the mirror destination and forgets
// it: it never delays or fails the original, and when too many copies are
// in flight new ones are dropped.
func (o *outbound) mirror(st *meshState, r *http.Request, body []byte, replay bool, to naming.Service, d *traffic.Destination, destPort uint32) {
	svc := o.p.names.FQDN(to)
	if !replay {
		o.p.metrics.mirrors.WithLabelValues(svc, "skipped_body").Inc()
		return
	}
	c := o.clusterAt(st, to, d.Subset, destPort)
	if c == nil || len(c.Eps) == 0 {
		o.p.metrics.mirrors.WithLabelValues(svc, "no_endpoint").Inc()
		return
	}
	key, _ := c.Hash.Key(r) // the mirror's answer goes nowhere: no cookie
	ep := c.Pick(nil, key)
	o.shadow(svc, c.Conns(ep).Get(c.KindOf(r), 0), func(ctx context.Context) *http.Request { return outRequest(ctx, r, ep, body, true) })
}

// shadow sends the request mk builds (a mirrored copy) with rt and forgets
// it, when fewer than maxMirrorsInFlight copies are in flight (else it is
// dropped); svc labels the metrics. Istio marks mirrored traffic by the
// Host's -shadow suffix.
func (o *outbound) shadow(svc string, rt http.RoundTripper, mk func(context.Context) *http.Request) {
	select {
	case o.mirrors <- struct{}{}:
	default:
		o.p.metrics.mirrors.WithLabelValues(svc, "dropped").Inc()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), mirrorTimeout)
	req := mk(ctx)
	host, port, err := net.SplitHostPort(req.Host)
	if err != nil {
		host, port = req.Host, ""
	}
	req.Host = host + "-shadow"
	if port != "" {
		req.Host = net.JoinHostPort(host+"-shadow", port)
	}
	go func() {
		defer func() { <-o.mirrors }()
		defer cancel()
		resp, err := rt.RoundTrip(req)
		if err != nil {
			o.p.metrics.mirrors.WithLabelValues(svc, "error").Inc()
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		o.p.metrics.mirrors.WithLabelValues(svc, "sent").Inc()
	}()
}
