package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// outbound carries the app's calls to other services over mTLS to their
// sidecars. Explicit mode: the app names the service in the Host (as an
// HTTP proxy client, or origin-form with Host), or uses CONNECT for TCP.
// Transparent mode: iptables redirects the app's connections here and the
// original destination picks the service.
type outbound struct {
	p      *Proxy
	queue  *connQueue
	srv    *http.Server
	routes map[string]*route
	tcp    sync.WaitGroup
}

// route is one upstream service: its endpoints and pooled transports
// whose TLS checks the service's identity.
type route struct {
	up   *Upstream
	next atomic.Uint64
	h2   *http.Transport // HTTP/2 over mTLS, multiplexed and pooled
	h1   *http.Transport // HTTP/1.1 over mTLS, for WebSocket upgrades
	rp   *httputil.ReverseProxy
	rp1  *httputil.ReverseProxy
}

type ctxKey struct{}

// routedConn is a transparently captured connection already matched to a
// service; reads start with the bytes peeked while sniffing.
type routedConn struct {
	net.Conn
	r       *bufio.Reader
	service string
}

func (c *routedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func newOutbound(p *Proxy, addr net.Addr) *outbound {
	o := &outbound{p: p, queue: newConnQueue(addr), routes: map[string]*route{}}
	for name, up := range p.cfg.upstreams {
		if up.ID.IsZero() {
			p.log.Warn("upstream has no expected identity; any identity of the trust domain is accepted", "upstream", name)
		}
		r := &route{up: up}
		r.h2 = o.transport(up, alpnH2)
		r.h1 = o.transport(up, alpnH1)
		r.rp, r.rp1 = o.reverseProxy(r, r.h2), o.reverseProxy(r, r.h1)
		o.routes[name] = r
	}
	o.srv = &http.Server{
		Handler:           o,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		Protocols:         new(http.Protocols),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 250},
		ErrorLog:          p.httpErrorLog("outbound"),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if rc, ok := c.(*routedConn); ok {
				return context.WithValue(ctx, ctxKey{}, rc.service)
			}
			return ctx
		},
	}
	// Apps speak HTTP/1.1 or h2c (gRPC) to their sidecar.
	o.srv.Protocols.SetHTTP1(true)
	o.srv.Protocols.SetUnencryptedHTTP2(true)
	return o
}

func (o *outbound) transport(up *Upstream, alpn string) *http.Transport {
	tr := &http.Transport{
		TLSClientConfig:     o.p.id.clientTLS(up.ID, alpn),
		TLSHandshakeTimeout: hsLimit,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		Protocols:           new(http.Protocols),
		HTTP2:               &http.HTTP2Config{MaxConcurrentStreams: 250, PingTimeout: 15 * time.Second, SendPingTimeout: 30 * time.Second},
	}
	if alpn == alpnH2 {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	return tr
}

// pick chooses the next endpoint of a route, round robin.
func (r *route) pick() string {
	eps := r.up.Endpoints
	return eps[int(r.next.Add(1)-1)%len(eps)]
}

func (o *outbound) reverseProxy(r *route, tr http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "https"
			pr.Out.URL.Host = r.pick()
			pr.Out.Host = pr.In.Host
			if pr.In.URL.IsAbs() && pr.In.Host == "" {
				pr.Out.Host = pr.In.URL.Host
			}
		},
		ModifyResponse: grpcTrailersOnly,
		FlushInterval:  -1,
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			o.p.log.Warn("upstream request failed", "service", r.up.Name, "error", err)
			code := http.StatusBadGateway
			if errors.Is(err, context.DeadlineExceeded) {
				code = http.StatusGatewayTimeout
			}
			writeError(w, req, code, "sigil: upstream "+r.up.Name+" failed: "+reasonOf(err))
		},
		ErrorLog: o.p.httpErrorLog("outbound-proxy"),
	}
}

func reasonOf(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && i+2 < len(msg) {
		return msg[i+2:]
	}
	return msg
}

// serviceOf names the service a request is for: the transparent route,
// else the host of an absolute-form URL, else the Host header; ports and a
// trailing dot are dropped.
func serviceOf(r *http.Request) string {
	if s, ok := r.Context().Value(ctxKey{}).(string); ok {
		return s
	}
	host := r.Host
	if r.URL.IsAbs() {
		host = r.URL.Host
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

func (o *outbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method == http.MethodConnect {
		o.connect(w, r)
		return
	}
	rec := &statusRecorder{ResponseWriter: w}
	svc := serviceOf(r)
	rt, ok := o.routes[svc]
	proto := protocolOf(r)
	switch {
	case !ok:
		// Fail closed: only known services are reachable through the mesh.
		writeError(rec, r, http.StatusBadGateway, "sigil: unknown service "+svc)
	default:
		// The app may not claim an identity; the receiving sidecar sets it.
		r.Header.Del(xfccName)
		if r.Header.Get("Upgrade") != "" {
			rt.rp1.ServeHTTP(rec, r)
		} else {
			rt.rp.ServeHTTP(rec, r)
		}
	}
	o.p.observe("outbound", o.p.id.id.String(), svc, r, rec.status(), proto, start, "")
}

// connect tunnels opaque TCP: CONNECT host:port, where host is a service.
func (o *outbound) connect(w http.ResponseWriter, r *http.Request) {
	svc := serviceOf(r)
	rt, ok := o.routes[svc]
	if !ok {
		writeError(w, r, http.StatusBadGateway, "sigil: unknown service "+svc)
		return
	}
	up, err := o.dialTCP(r.Context(), rt)
	if err != nil {
		writeError(w, r, http.StatusBadGateway, "sigil: upstream "+svc+" failed: "+reasonOf(err))
		return
	}
	client, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	o.tcp.Add(1)
	defer o.tcp.Done()
	client.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n"))
	if n := buf.Reader.Buffered(); n > 0 {
		peeked, _ := buf.Reader.Peek(n)
		up.Write(peeked)
	}
	o.p.metrics.tcp.WithLabelValues("outbound", o.p.id.id.String(), svc, "ok").Inc()
	pipe(client, up)
}

// dialTCP opens an mTLS connection for opaque TCP to a service's sidecar.
func (o *outbound) dialTCP(ctx context.Context, rt *route) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, hsLimit)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: o.p.id.clientTLS(rt.up.ID, alpnTCP)}
	c, err := d.DialContext(ctx, "tcp", rt.pick())
	if err != nil {
		o.p.metrics.handshakes.WithLabelValues("outbound", handshakeReason(err)).Inc()
		return nil, err
	}
	if c.(*tls.Conn).ConnectionState().NegotiatedProtocol != alpnTCP {
		c.Close()
		return nil, errors.New("peer sidecar does not speak " + alpnTCP)
	}
	return c, nil
}

// serve accepts the app's connections. In transparent mode each is routed
// by its original destination; otherwise it is plain explicit mode.
func (o *outbound) serve(ln net.Listener) error {
	go o.srv.Serve(o.queue)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		if !o.p.cfg.Transparent {
			o.queue.push(c)
			continue
		}
		go o.transparent(c)
	}
}

// httpPrefixes are the first bytes of HTTP/1.x requests and the h2 preface.
var httpPrefixes = []string{"GET ", "POST", "PUT ", "HEAD", "DELE", "OPTI", "PATC", "TRAC", "CONN", "PRI "}

func (o *outbound) transparent(c net.Conn) {
	dst, err := originalDst(c)
	if err != nil || dst.String() == c.LocalAddr().String() {
		// Not redirected: the app spoke to us explicitly.
		o.queue.push(c)
		return
	}
	rt := o.routeForAddr(dst)
	if rt == nil {
		o.p.log.Warn("transparent connection to an unknown destination refused", "dst", dst.String())
		o.p.metrics.tcp.WithLabelValues("outbound", o.p.id.id.String(), "unknown", "refused").Inc()
		c.Close()
		return
	}
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	head, _ := br.Peek(4)
	c.SetReadDeadline(time.Time{})
	rc := &routedConn{Conn: c, r: br, service: rt.up.Name}
	for _, p := range httpPrefixes {
		if string(head) == p {
			o.queue.push(rc)
			return
		}
	}
	up, err := o.dialTCP(context.Background(), rt)
	if err != nil {
		o.p.log.Warn("upstream tcp failed", "service", rt.up.Name, "error", err)
		c.Close()
		return
	}
	o.tcp.Add(1)
	defer o.tcp.Done()
	defer c.Close()
	defer up.Close()
	o.p.metrics.tcp.WithLabelValues("outbound", o.p.id.id.String(), rt.up.Name, "ok").Inc()
	pipe(rc, up)
}

// routeForAddr finds the service one of whose endpoints is on dst's host.
func (o *outbound) routeForAddr(dst *net.TCPAddr) *route {
	for _, rt := range o.routes {
		for _, ep := range rt.up.Endpoints {
			host, _, _ := net.SplitHostPort(ep)
			if ip := net.ParseIP(host); ip != nil && ip.Equal(dst.IP) {
				return rt
			}
		}
	}
	return nil
}
