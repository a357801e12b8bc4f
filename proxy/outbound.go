package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/proxy/h1"
	"github.com/sigil-mesh/sigil/proxy/h2conn"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/proxy/loop"
	"github.com/sigil-mesh/sigil/proxy/upstream"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// outbound carries the app's calls to other services over mTLS to their
// sidecars. Explicit mode: the app names the service in the Host (as an
// HTTP proxy client, or origin-form with Host), or uses CONNECT for TCP.
// Transparent mode: iptables redirects the app's connections here and the
// original destination picks the service. Routing follows the mesh's
// VirtualServices and DestinationRules (forward.go: ServeHTTP and send;
// route.go: the steps of a route in order).
type outbound struct {
	p        *Proxy
	h2       *h2conn.Server // h2c from the app (gRPC)
	fast     *h1.Server     // HTTP/1.x from the app
	loop     *loop.Loop     // HTTP/1.1 from the app on an event loop (nil: fast serves it)
	state    atomic.Pointer[meshState]
	clusters *upstream.Clusters
	upstream *upstream.Conns // connections to other sidecars, capped per destination
	mirrors  chan struct{}   // bounds mirrored requests in flight
	tcp      sync.WaitGroup
	// defaults holds the route of each service no VirtualService covers
	// (naming.Service → *traffic.Route), built on first use.
	defaults sync.Map

	epMu      sync.Mutex
	endpoints map[string]*upstream.Endpoint
	// synced is set once the first discovery snapshot is in force: the
	// endpoints it brought were there before this sidecar, so they join
	// warm; later ones join at the time they appear (slowStart).
	synced bool
	// clock reads the time for endpoints' join times and the balancers'
	// warmup (nil: time.Now); tests set it.
	clock func() time.Time
	// dialOutside dials hosts outside the mesh, for HTTP and TCP (nil: a
	// net.Dialer with the system's resolver); tests set it to reach
	// their servers by name.
	dialOutside func(ctx context.Context, network, addr string) (net.Conn, error)
}

// now is the outbound side's clock.
func (o *outbound) now() time.Time {
	if o.clock != nil {
		return o.clock()
	}
	return time.Now()
}

type ctxKey struct{}

// routedDest is what a transparently captured connection is for, carried
// in the context of its requests under ctxKey.
type routedDest struct {
	service naming.Service
	port    uint16 // the original destination's port: the one the app dialled
	pin     string // the endpoint the app dialled, when it is a pod's (clusterip.go)
}

// routedConn is a transparently captured connection already matched to a
// service; reads start with the bytes peeked while sniffing.
type routedConn struct {
	net.Conn
	r       *bufio.Reader
	service naming.Service
	port    uint16 // the original destination's port
	pin     string // as routedDest's
}

func (c *routedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// NetConn is the app's TCP connection, which h1 half-closes to end a
// connection lingering (so an early answer is not lost to a reset).
func (c *routedConn) NetConn() net.Conn { return c.Conn }

func newOutbound(p *Proxy) *outbound {
	o := &outbound{p: p, clusters: upstream.NewClusters(), mirrors: make(chan struct{}, maxMirrorsInFlight), endpoints: map[string]*upstream.Endpoint{}, upstream: upstream.NewConns(p.metrics.reg)}
	for name, up := range p.cfg.upstreams {
		if up.ID.IsZero() {
			p.log.Warn("upstream has no expected identity; any identity of the trust domain is accepted", "upstream", name)
		}
	}
	o.setState(traffic.Compile(0, nil), 0, 0, nil)
	// The app's h2c (gRPC) is served by h2conn, as HTTP/2 from other
	// sidecars is on the inbound side: one writer per connection sends
	// the frames of a call in one write, where Go's server wrote and
	// flushed each (bench/README.md, "gRPC unary: where the CPU per call
	// goes"). Its limits and abuse counting are the inbound port's. Its
	// requests go on over h2conn's client, which dials with the request's
	// own context (no mark for dials to follow, unlike HTTP/1.1's pooled
	// transports: requestCtxKey).
	o.h2 = p.h2Server(o, "outbound")
	// The lean server gives every request its connection's context, which
	// serveApp marks for dials to follow (withRequestCtx, once per
	// connection instead of a copy of each request).
	o.fast = p.leanServer(o, "outbound")
	return o
}

// DialSidecar opens the mTLS connection of kind to ep's sidecar
// (upstream.Dialer): it must prove ep's identity (secure naming) and
// speak kind's ALPN, and carries requests only until our certificate
// expires, or the peer's if that comes first (h1 and h2conn take the
// earlier).
func (o *outbound) DialSidecar(ctx context.Context, ep *upstream.Endpoint, kind int, sni string) (net.Conn, error) {
	alpn := alpnH1
	if kind == upstream.ViaH2 {
		alpn = alpnH2
	}
	// Our SVID now is the one the handshake presents or an older
	// one: its expiry is a safe bound for the connection.
	own := o.p.id.notAfter()
	c, err := o.dialTLS(ctx, ep.Addr, ep.ID, alpn, sni)
	if err != nil {
		return nil, err
	}
	return expiringConn{Conn: c.(*tls.Conn), notAfter: own}, nil
}

// expiringConn is an mTLS connection to a sidecar that carries requests
// only until our certificate expires; h1 and h2conn take the earlier of
// that and the peer certificate's expiry (h1.NotAfterConn,
// h2conn.NotAfterConn).
type expiringConn struct {
	*tls.Conn
	notAfter time.Time // ours, read before the handshake
}

// NotAfter is when the connection stops carrying new requests.
func (c expiringConn) NotAfter() time.Time { return c.notAfter }

func reasonOf(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && i+2 < len(msg) {
		return msg[i+2:]
	}
	return msg
}

// serviceOf names the service a request is for (destOf without the port).
func (o *outbound) serviceOf(r *http.Request) (naming.Service, error) {
	svc, _, err := o.destOf(r)
	return svc, err
}

// destOf names the service a request is for, and the port: the
// transparent route (the original destination's port), else the authority
// of an absolute-form target (RFC 9112 §3.2.2: a proxy ignores the Host
// header then), else the Host header or :authority, with its port, or 80
// when it has none (http's default port, RFC 9110 §4.2.1: the app speaks
// plain HTTP to its sidecar). The name must be one of a mesh service's own
// forms (package naming), read as Kubernetes DNS reads it: a two-label
// name.ns is the service only when the mesh knows it (it has endpoints,
// or a VirtualService or DestinationRule names it), else the host outside
// the mesh it spells (naming.Resolver.AppAuthority); errors wrap
// naming.ErrMalformed or naming.ErrNotInMesh. The port selects routes (match.port) and
// port-level policies (portLevelSettings): docs/istio.md, Gateways and
// ports.
func (o *outbound) destOf(r *http.Request) (naming.Service, uint16, error) {
	if d, ok := r.Context().Value(ctxKey{}).(routedDest); ok {
		return d.service, d.port, nil
	}
	authority := r.Host
	if r.Method != http.MethodConnect && r.URL.IsAbs() {
		if r.URL.User != nil {
			return naming.Service{}, 0, fmt.Errorf("%w: userinfo in the request target", naming.ErrMalformed)
		}
		authority = rawAuthority(r.RequestURI, r.URL.Host)
	}
	st := o.state.Load()
	svc, err := o.p.names.AppAuthority(authority, func(s naming.Service) bool {
		return len(st.byService[s]) > 0 || st.table.NamesService(s)
	})
	if err != nil {
		return naming.Service{}, 0, err
	}
	port, err := naming.Port(authority)
	if err != nil {
		return naming.Service{}, 0, err
	}
	if port == 0 {
		port = defaultHTTPPort
	}
	return svc, port, nil
}

// defaultHTTPPort is the port of a request whose authority names none.
const defaultHTTPPort = 80

// rawAuthority is the authority of an absolute-form target as the caller
// wrote it: net/url has already undone %-escapes in the host, which a
// mesh name never has.
func rawAuthority(target, parsed string) string {
	_, rest, ok := strings.Cut(target, "://")
	if !ok {
		return parsed
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// meshNames is the resolver of the app's hosts: a bare service name is
// one of the workload's own namespace, the one in its SPIFFE ID
// (spiffe://td/ns/<ns>/sa/<sa>), which --namespace (claimed) may not
// contradict; for an ID of another form, claimed, else "default"
// (naming.WorkloadNamespace).
func meshNames(self spiffeid.ID, claimed, clusterDomain string) (naming.Resolver, error) {
	ns, err := naming.WorkloadNamespace(self, claimed)
	if err != nil {
		return naming.Resolver{}, fmt.Errorf("proxy: --namespace: %w", err)
	}
	r, err := naming.NewResolver(ns, clusterDomain)
	if err != nil {
		return naming.Resolver{}, fmt.Errorf("proxy: own identity %s: %w", self, err)
	}
	return r, nil
}

// refuseName answers a request whose host names no mesh service: 400 for a
// malformed name, else 502 (fail closed: only the mesh's own services, and
// the hosts outside it that a DestinationRule says how to reach, are
// reachable through it), saying what would let such a host through.
func refuseName(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, naming.ErrMalformed) {
		hop.WriteError(w, r, http.StatusBadRequest, "sigil: bad host: "+err.Error())
		return
	}
	msg := "sigil: unknown service: " + err.Error()
	if errors.Is(err, naming.ErrNotInMesh) {
		msg += "; a host outside the mesh is reached only through a DestinationRule for it, exported to this namespace, with trafficPolicy.tls.mode DISABLE, SIMPLE or MUTUAL"
	}
	hop.WriteError(w, r, http.StatusBadGateway, msg)
}

// connect tunnels opaque TCP: CONNECT host:port, where host is a service
// (routed by its tcp routes) or a host outside the mesh that a
// DestinationRule names (external.go).
func (o *outbound) connect(w http.ResponseWriter, r *http.Request) {
	svc, port, err := o.destOf(r)
	key := svc.String()
	if err != nil {
		// A host outside the mesh with tcp or tls routes is routed by
		// them (outside.go), else its DestinationRule alone reaches it.
		var outside string
		if outside, port = o.outsideL4(r, err); outside == "" {
			if !errors.Is(err, naming.ErrNotInMesh) || !o.connectExternal(w, r) {
				refuseName(w, r, err)
			}
			return
		}
		key = outside
	}
	st := o.state.Load()
	if st.table.HasTLSRoutes(key) {
		o.connectTLS(w, r, svc, key, uint32(port))
		return
	}
	up, rec, err := o.openL4(r.Context(), st, svc, key, uint32(port), "", requestHashKey(r))
	if err != nil {
		// The app reads the sidecar's answer, not its package names.
		hop.WriteError(w, r, http.StatusBadGateway, "sigil: "+strings.TrimPrefix(err.Error(), "proxy: "))
		return
	}
	o.hijackAndPipe(w, up, rec)
}

// dialTCP opens an mTLS connection for opaque TCP to a service's sidecar,
// one endpoint of cluster c (whose sni the ClientHello carries).
func (o *outbound) dialTCP(ctx context.Context, c *upstream.Cluster, ep *upstream.Endpoint) (net.Conn, error) {
	return o.dialTLS(ctx, ep.Addr, ep.ID, alpnTCP, c.SNI)
}

// dialTLS opens an mTLS connection to a sidecar that must be id (secure
// naming) and speak alpn, sending sni (clientTLS).
func (o *outbound) dialTLS(ctx context.Context, addr string, id spiffeid.ID, alpn, sni string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, hsLimit)
	defer cancel()
	c, err := o.upstream.DialTLS(ctx, addr, o.p.id.clientTLS(id, alpn, sni))
	if err != nil {
		o.p.metrics.handshakes.WithLabelValues("outbound", handshakeReason(err)).Inc()
		return nil, err
	}
	if c.ConnectionState().NegotiatedProtocol != alpn {
		c.Close()
		return nil, errors.New("peer sidecar does not speak " + alpn)
	}
	return c, nil
}

// serve accepts the app's connections. In transparent mode each is routed
// by its original destination; otherwise it is plain explicit mode.
func (o *outbound) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		if !o.p.cfg.Transparent {
			go o.serveApp(&routedConn{Conn: c, r: bufio.NewReader(c)})
			continue
		}
		go o.transparent(c)
	}
}

// serveApp serves an HTTP connection from the app: h2c (its preface)
// through h2conn, HTTP/1.x through the lean server. The first bytes
// are already buffered or come within the idle timeout.
func (o *outbound) serveApp(rc *routedConn) {
	rc.SetReadDeadline(time.Now().Add(o.fast.IdleTimeout))
	head, err := rc.r.Peek(4)
	if err != nil {
		rc.Close()
		return
	}
	rc.SetReadDeadline(time.Time{})
	ctx := context.Background()
	if !rc.service.IsZero() {
		ctx = context.WithValue(ctx, ctxKey{}, routedDest{rc.service, rc.port, rc.pin})
	}
	if string(head) == "PRI " {
		o.h2.Serve(ctx, rc)
		return
	}
	if o.loop != nil {
		// What the sniff read goes first; the loop serves the rest.
		buffered, _ := rc.r.Peek(rc.r.Buffered())
		var value any
		if !rc.service.IsZero() {
			value = routedDest{rc.service, rc.port, rc.pin}
		}
		if err := o.loop.Take(loop.PlainWith(rc.Conn, buffered), value); err != nil {
			o.p.log.Debug("outbound connection not taken by the event loop", "peer", rc.RemoteAddr().String(), "error", err)
		}
		return
	}
	o.fast.Serve(upstream.WithRequestCtx(withConnAbort(ctx, rc)), rc)
}

// httpPrefixes are the first bytes of HTTP/1.x requests and the h2 preface.
var httpPrefixes = []string{"GET ", "POST", "PUT ", "HEAD", "DELE", "OPTI", "PATC", "TRAC", "CONN", "PRI "}

func (o *outbound) transparent(c net.Conn) {
	dst, err := originalDst(c)
	if err != nil || dst.String() == c.LocalAddr().String() {
		// Not redirected: the app spoke to us explicitly.
		o.serveApp(&routedConn{Conn: c, r: bufio.NewReader(c)})
		return
	}
	svc, pin := o.serviceForAddr(dst)
	if svc.IsZero() {
		if o.transparentExternal(c, dst) {
			return
		}
		o.p.log.Warn("transparent connection to an unknown destination refused", "dst", dst.String())
		rec := o.tcpRecord(naming.Service{}, unknownService, nil, nil)
		rec.flags = flagNoRoute
		o.p.metrics.tcpOpen(rec)
		o.p.metrics.tcpClose(rec, 0, 0)
		c.Close()
		return
	}
	br := bufio.NewReader(c)
	var head []byte
	if !o.state.Load().opaque[svc][uint32(dst.Port)] {
		// Undeclared: HTTP if the app's first bytes say so. A port its
		// Service declares opaque TCP goes through at once (a server-first
		// protocol would otherwise wait here for bytes that never come).
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		head, _ = br.Peek(4)
		c.SetReadDeadline(time.Time{})
	}
	rc := &routedConn{Conn: c, r: br, service: svc, port: uint16(dst.Port), pin: pin}
	for _, p := range httpPrefixes {
		if string(head) == p {
			o.serveApp(rc)
			return
		}
	}
	st := o.state.Load()
	sni := ""
	if st.table.HasTLSRoutes(svc.String()) {
		c.SetReadDeadline(time.Now().Add(clientHelloWait))
		record, name := readClientHello(br)
		c.SetReadDeadline(time.Time{})
		rc.r, sni = bufio.NewReader(io.MultiReader(bytes.NewReader(record), br)), name
	}
	ctx := context.WithValue(context.Background(), ctxKey{}, routedDest{svc, uint16(dst.Port), pin})
	up, rec, err := o.openL4(ctx, st, svc, svc.String(), uint32(dst.Port), sni, func(cl *upstream.Cluster) string { return cl.Hash.ConnKey(c.RemoteAddr()) })
	if err != nil {
		o.p.log.Warn("tcp connection refused", "service", svc.String(), "error", err)
		c.Close()
		return
	}
	o.pipeTCP(rc, up, rec)
}
