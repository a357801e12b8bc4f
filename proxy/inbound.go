package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/policy"
	"github.com/sigil-mesh/sigil/protocol"
	"github.com/sigil-mesh/sigil/proxy/h1"
	"github.com/sigil-mesh/sigil/proxy/h2conn"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/proxy/loop"
	"github.com/sigil-mesh/sigil/telemetry"
	"go.opentelemetry.io/otel/trace"
)

// inbound terminates mTLS from other sidecars, asks the policy about every
// request (or TCP connection) and forwards what is allowed to the app.
type inbound struct {
	p        *Proxy
	tls      *tls.Config
	hs       handshakeSlots         // TLS handshakes in progress
	h2       *h2conn.Server         // HTTP/2 from other sidecars
	fast     *h1.Server             // HTTP/1.1 from other sidecars
	app      *h1.Client             // HTTP/1.x requests to the app
	appH2C   *h2conn.Client         // gRPC to the app: h2c with prior knowledge
	toApp    *httputil.ReverseProxy // WebSocket upgrades to the app
	tcpConns sync.WaitGroup
	peers    peerCache
	// loop, if not nil, serves HTTP/1.1 connections (inboundloop.go).
	loop *loop.Loop
}

func newInbound(p *Proxy) (*inbound, error) {
	in := &inbound{p: p, hs: make(handshakeSlots, p.limits.handshakes)}
	// Failures of chain, expiry or ID are counted here, at verification;
	// handshake() counts the others (no certificate, not TLS, timeouts).
	in.tls = p.id.serverTLS(func(err error) {
		p.metrics.handshakes.WithLabelValues("inbound", handshakeReason(err)).Inc()
	})
	// DisableCompression: the caller's Accept-Encoding reaches the app as
	// sent (Go's default adds gzip and unzips the answer).
	h1t := &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, DisableCompression: true}
	in.toApp = in.appProxy(h1t)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	dialApp := func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", p.cfg.App) }
	in.app = &h1.Client{MaxIdle: 256, Dial: dialApp, ProtocolError: p.metrics.protocolError("inbound")}
	// gRPC reaches the app over h2conn's client, as it travels between
	// sidecars: the frames of a call leave in one write, where Go's
	// HTTP/2 transport wrote and flushed each (bench/README.md, "gRPC
	// unary: where the CPU per call goes").
	in.appH2C = &h2conn.Client{Dialer: hop.DialFunc(dialApp), IdleTimeout: 90 * time.Second}
	in.fast = p.leanServer(in, "inbound")
	// HTTP/2 between sidecars (gRPC, and HTTP/1.1 under h2UpgradePolicy
	// UPGRADE) is served by h2conn, whose one writer per connection sends
	// the frames of many streams in one write (bench/README.md).
	in.h2 = p.h2Server(in, "inbound")
	// A peer sidecar's connection carries many apps' requests: one app's
	// abuse, relayed, ends it without failing the others' requests
	// already taken (docs/limits.md).
	in.h2.AbuseDrain = peerAbuseDrain
	if p.cfg.InboundEventLoop {
		var err error
		if in.loop, err = in.newLoop(dialApp); err != nil {
			return nil, fmt.Errorf("proxy: --inbound-event-loop: %w", err)
		}
		p.loopGauge("inbound", in.loop)
	}
	return in, nil
}

// peerAbuseDrain is how long the requests already taken on a connection
// from another sidecar may run once the connection is cut for abuse
// (h2conn.Server.AbuseDrain), Envoy's drain_timeout bound for a GOAWAY.
const peerAbuseDrain = 2 * time.Second

func (in *inbound) appProxy(tr http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = in.p.cfg.App
			pr.Out.Host = pr.In.Host
			// As authorized: ReverseProxy drops query pairs net/url cannot parse.
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
		},
		FlushInterval: -1, // stream: server-sent events must not be held back
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			appFailed(w)
			in.p.log.Warn("app unreachable", "app", in.p.cfg.App, "error", err)
			hop.WriteError(w, r, http.StatusBadGateway, "sigil: app unreachable")
		},
		ErrorLog: in.p.httpErrorLog("inbound-proxy"),
	}
}

// serve accepts connections and handshakes each on its own goroutine, so
// one slow client cannot hold up the others.
func (in *inbound) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		if !in.hs.take() {
			in.p.refused.WithLabelValues("inbound", refusedMaxHandshakes).Inc()
			c.Close()
			continue
		}
		go in.handshake(c)
	}
}

func (in *inbound) handshake(c net.Conn) {
	var lc *loop.Conn // the loop's form of the connection, when there is a loop
	var tc *tls.Conn
	if in.loop != nil {
		lc = loop.Server(c, in.tls)
		tc = lc.TLS
	} else {
		tc = tls.Server(c, in.tls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hsLimit)
	err := tc.HandshakeContext(ctx)
	cancel()
	in.hs.put()
	if err != nil {
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) {
			err = errNotTLS
		}
		if verifyFailed(err) {
			// Already counted with its reason by VerifyPeerCertificate.
			c.Close()
			return
		}
		in.p.metrics.handshakes.WithLabelValues("inbound", handshakeReason(err)).Inc()
		in.p.log.Debug("inbound handshake failed", "peer", c.RemoteAddr().String(), "error", err)
		c.Close()
		return
	}
	switch tc.ConnectionState().NegotiatedProtocol {
	case alpnTCP:
		in.tcpConns.Add(1)
		defer in.tcpConns.Done()
		in.serveTCP(tc)
	case alpnH1, "":
		// HTTP/1.1, also from clients that offer no ALPN.
		if lc != nil {
			if err := in.loop.Take(lc, nil); err != nil {
				in.p.log.Debug("inbound connection not taken by the event loop", "peer", c.RemoteAddr().String(), "error", err)
			}
			return
		}
		in.fast.Serve(withConnAbort(context.Background(), tc), tc)
	default:
		in.h2.Serve(context.Background(), tc)
	}
}

// inboundCall is one inbound request from its admission to its record,
// in one allocation, on either HTTP/1.1 path (ServeHTTP on goroutines,
// inboundLoop on proxy/loop).
type inboundCall struct {
	in    *inbound
	r     *http.Request
	start time.Time
	rec   statusRecorder
	peer  *peer
	proto string
	input policy.Input
	xfcc  [1]string
	// decision is the policy decision's ID ("" before one); wouldDeny:
	// the dry-run policy would have denied it.
	decision  string
	wouldDeny bool
	span      trace.Span
	cancel    context.CancelFunc // a gRPC deadline's
	answer    answerWriter       // the loop path's local answers
	noAnswer  bool               // the loop path: the exchange ended before any answer (code 0)
}

func (in *inbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &inboundCall{in: in, r: r, start: time.Now()}
	c.rec.ResponseWriter = w
	if !in.identify(c) {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			in.p.observeAborted(&c.rec, func(w *statusRecorder) requestRecord { return in.record(w, c.peer.id, hop.ProtocolOf(r)) }, r, c.start)
			if c.span != nil {
				in.p.trace.end(c.span, c.rec.status(), c.peer.id)
			}
			if c.cancel != nil {
				c.cancel() // a gRPC deadline's, as finish would
			}
			panic(v)
		}
	}()
	if in.admit(c) {
		r := c.r
		switch {
		case c.proto == protocol.GRPC:
			in.forward(&c.rec, r, in.appH2C)
		case hop.IsWebSocketUpgrade(r.Header):
			in.toApp.ServeHTTP(&c.rec, r)
		default:
			in.forward(&c.rec, r, in.app)
		}
	}
	in.finish(c)
}

// identify finds who called, from the connection's certificate; a
// request without one is refused 403, unrecorded (it never reached the
// policy).
func (in *inbound) identify(c *inboundCall) bool {
	peer, err := in.peers.of(in.p.id.id, c.r.TLS)
	if err != nil {
		hop.WriteError(&c.rec, c.r, http.StatusForbidden, "sigil: no peer identity")
		return false
	}
	c.peer = peer
	return true
}

// admit takes a request through every step before it is forwarded to
// the app: the Connection options, the forged identity, the trace, the
// target's normalization (prepare) and the policy decision (authorize).
// It reports whether to forward c.r (then with XFCC set); when not, it
// has answered on c.rec. Either way finish records the call.
func (in *inbound) admit(c *inboundCall) bool {
	return in.prepare(c) && in.authorize(c)
}

// prepare is admit's steps before the policy decision, which it makes
// the input of (c.input); it reports whether the request goes on to
// the decision, having answered on c.rec if not.
func (in *inbound) prepare(c *inboundCall) bool {
	r, rec := c.r, &c.rec
	c.proto = hop.ProtocolOf(r)
	// First, before the sidecar adds the caller's identity and trace
	// context: a Connection header may not remove what the sidecar sets.
	if err := hop.TakeConnectionOptions(r.Header); err != nil {
		rec.setFlag(flagBadRequest)
		hop.WriteError(rec, r, http.StatusBadRequest, "sigil: "+err.Error())
		return false
	}
	hop.DropForgedIdentity(r.Header)
	if in.p.trace != nil {
		c.span = in.p.trace.start(r, trace.SpanKindServer, "inbound", in.p.cfg.Service)
	}
	if c.proto == protocol.GRPC {
		r, c.cancel = hop.WithGRPCDeadline(r, c.start)
		c.r = r
	}
	// The policy decides on the path the app will get.
	target, err := in.p.normalizeTarget(r)
	if err != nil {
		rec.setFlag(flagBadRequest)
		refuseTarget(rec, r, err)
		return false
	}
	input := &c.input
	*input = policy.Input{
		Source:      c.peer.source,
		Destination: policy.Dest{Principal: in.p.id.id.String(), Service: in.p.cfg.Service, Namespace: in.p.names.Namespace(), Port: in.p.cfg.appPort},
		Request:     policy.Request{Method: r.Method, Path: r.RequestURI, URLPath: target.Path, RawQuery: target.Query, Host: r.Host, HeadersFrom: func() map[string]string { return headerMap(r.Header) }, Protocol: c.proto},
		Connection:  policy.Connection{TLSVersion: tls13},
	}
	return true
}

// settled reports whether the policy decision on c.input is at hand
// (policy.Engine.Settled), the dry-run policy's too: made without
// evaluating a policy.
func (in *inbound) settled(c *inboundCall) bool {
	return in.p.policy.Settled(&c.input) && (in.p.dryRun == nil || !in.p.dryRun.Loaded() || in.p.dryRun.Settled(&c.input))
}

// authorize is admit's policy decision on c.input, and what follows
// from it: the denial's answer on c.rec, or the caller's identity in
// XFCC. It reports whether the request is allowed.
func (in *inbound) authorize(c *inboundCall) bool {
	r, rec, input := c.r, &c.rec, &c.input
	d := in.p.policy.Decide(r.Context(), input)
	in.p.countDecision(d)
	c.decision = d.ID
	c.wouldDeny = in.p.decideDryRun(r.Context(), input)
	if !d.Allow {
		rec.setFlag(flagUnauthorized)
		in.p.metrics.stats.Deny(telemetry.Denial{At: c.start, SourcePrincipal: c.peer.id, DestinationPrincipal: in.p.id.id.String(),
			DestinationNamespace: in.p.names.Namespace(), DestinationService: in.p.cfg.Service, Method: r.Method, Path: input.Request.URLPath, DecisionID: d.ID})
		if errors.Is(d.Err, policy.ErrNotRecorded) {
			// Fail closed on the audit record (--audit-failure-mode-allow=false):
			// the policy may have allowed it, so not 403.
			hop.WriteError(rec, r, http.StatusServiceUnavailable, "audit record unavailable")
		} else {
			hop.WriteError(rec, r, http.StatusForbidden, "RBAC: access denied")
		}
		return false
	}
	// Only the mesh says who the caller is.
	c.xfcc[0] = c.peer.xfcc
	r.Header[hop.XFCC] = c.xfcc[:]
	return true
}

// finish records a call once its answer is whole (or it ended without
// one), and ends its trace span.
func (in *inbound) finish(c *inboundCall) {
	if c.cancel != nil {
		c.cancel()
	}
	done := in.record(&c.rec, c.peer.id, c.proto)
	done.dryRunDenied = c.wouldDeny
	if c.noAnswer {
		done.code = 0
	}
	in.p.observe(done, c.r, c.start, c.decision)
	if c.span != nil {
		in.p.trace.end(c.span, c.rec.status(), c.peer.id)
	}
}

// record is the record of an inbound request from peer: reported by the
// destination, for this sidecar's own service and identity.
func (in *inbound) record(w *statusRecorder, peer, proto string) requestRecord {
	rec := requestRecord{reporter: reporterDestination, source: peer, dest: in.p.id.id.String(), service: in.self(),
		protocol: proto, code: w.status(), flags: cmp.Or(w.flags, flagNone)}
	if proto == protocol.GRPC {
		rec.grpcStatus = grpcStatusOfResponse(w.Header())
	}
	return rec
}

// self is the sidecar's own service.
func (in *inbound) self() naming.Service {
	return naming.Service{Name: in.p.cfg.Service, Namespace: in.p.names.Namespace()}
}

// appFailed notes on w, when it is the request's recorder, that the app
// failed or could not be reached.
func appFailed(w http.ResponseWriter) {
	if rec, ok := w.(*statusRecorder); ok {
		rec.setFlag(flagUpstreamFail)
	}
}

// forward sends an HTTP request to the app with rt (a pooled HTTP/1.1
// connection, or for gRPC the app's h2c connection) and copies the answer
// back, trailers included.
func (in *inbound) forward(w http.ResponseWriter, r *http.Request, rt http.RoundTripper) {
	out := appRequest(r, in.p.cfg.App, rt == in.app)
	hop.StripRequestHeaders(out.Header)
	hop.DropForgedTrailerIdentity(out)
	resp, err := rt.RoundTrip(out)
	if err != nil {
		appFailed(w)
		in.p.log.Warn("app unreachable", "app", in.p.cfg.App, "error", err)
		hop.WriteError(w, r, http.StatusBadGateway, "sigil: app unreachable")
		return
	}
	defer resp.Body.Close()
	hop.CopyResponse(w, resp)
}

// appRequest is r as sent to the app at addr, over HTTP/1.1 when h1 (else
// h2c): a shallow copy, sharing r's headers, with its URL in the same
// allocation (r is the handler's own: nothing else changes them).
func appRequest(r *http.Request, addr string, h1 bool) *http.Request {
	cp := &requestCopy{req: *r, url: *r.URL}
	out := &cp.req
	out.URL = &cp.url
	out.URL.Scheme, out.URL.Host = "http", addr
	out.RequestURI, out.Close = "", false
	if h1 {
		out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	}
	return out
}

// headerMap flattens headers for the policy input: lower-case names,
// repeated values joined by ",".
func headerMap(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[strings.ToLower(k)] = strings.Join(v, ",")
	}
	return out
}

// serveTCP authorizes one opaque TCP connection and pipes it to the app.
func (in *inbound) serveTCP(tc *tls.Conn) {
	defer tc.Close()
	cs := tc.ConnectionState()
	peer, _, err := peerID(&cs)
	if err != nil {
		return
	}
	input := &policy.Input{
		Source:      policy.PeerFromID(peer.String()),
		Destination: policy.Dest{Principal: in.p.id.id.String(), Service: in.p.cfg.Service, Namespace: in.p.names.Namespace(), Port: in.p.cfg.appPort},
		Request:     policy.Request{Protocol: protocol.TCP, Headers: map[string]string{}},
		Connection:  policy.Connection{TLSVersion: tls13},
	}
	d := in.p.policy.Decide(context.Background(), input)
	in.p.countDecision(d)
	wouldDeny := in.p.decideDryRun(context.Background(), input)
	rec := &requestRecord{reporter: reporterDestination, source: peer.String(), dest: in.p.id.id.String(), service: in.self(),
		protocol: protocol.TCP, flags: flagNone, dryRunDenied: wouldDeny}
	if !d.Allow {
		rec.flags = flagUnauthorized
		in.p.metrics.stats.Deny(telemetry.Denial{At: time.Now(), SourcePrincipal: rec.source, DestinationPrincipal: rec.dest,
			DestinationNamespace: rec.service.Namespace, DestinationService: rec.service.Name, DecisionID: d.ID})
		in.p.metrics.tcpOpen(rec)
		in.p.metrics.tcpClose(rec, 0, 0)
		return
	}
	app, err := net.DialTimeout("tcp", in.p.cfg.App, 5*time.Second)
	if err != nil {
		rec.flags = flagUpstreamFail
		in.p.metrics.tcpOpen(rec)
		in.p.metrics.tcpClose(rec, 0, 0)
		return
	}
	defer app.Close()
	in.p.metrics.tcpOpen(rec)
	sent, received := hop.Pipe(tc, app)
	in.p.metrics.tcpClose(rec, sent, received)
}

// statusRecorder notes the status code; Unwrap lets http.ResponseController
// reach Flush and Hijack (streaming, WebSocket) underneath.
type statusRecorder struct {
	http.ResponseWriter
	code int
	routed
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
