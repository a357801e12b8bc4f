// Command floor is a bench-only pair of HTTP/1.1 forwarding proxies made
// of the sidecar's transport and nothing else: the sidecar's own
// HTTP/1.1 server and pooled client (proxy/h1), crypto/tls 1.3 with
// client certificates, the peer checked by chain and SPIFFE ID
// (go-spiffe's tlsconfig), hop-by-hop headers removed (proxy/hop), one
// core (GOMAXPROCS 1, the sidecar's default). No routing, policy
// decision, audit record, metrics, tracing or access log.
//
// meshbench runs it as the "floor" setup beside the Sigil pair: the gap
// between floor and nginx is what Go's runtime, its network poller and
// crypto/tls cost an HTTP proxy on this machine; the gap between Sigil
// and floor is what Sigil's own per-request features cost. It is not a
// product and is not shipped.
//
//	floor [-loop] -mode client -listen A -upstream B -cert C -key K -bundle P -id SPIFFE-ID
//	floor [-loop] -mode server -listen B -upstream APP -cert C -key K -bundle P -id SPIFFE-ID
//
// In client mode it listens in plain HTTP/1.1 and calls B over mTLS,
// accepting only a server whose SVID is -id; in server mode it listens
// with mTLS, accepting only clients whose SVID is -id, and calls APP in
// plain HTTP/1.1. Errors from the upstream are answered 502.
//
// With -loop it forwards on an epoll loop of its own instead of proxy/h1
// and Go's poller (loop_linux.go): the experiment of issue 17 that asks
// whether reading only ready sockets and driving crypto/tls from the
// loop's buffers closes the gap to nginx. meshbench runs it as the
// "floor-loop" setup.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sigil-mesh/sigil/proxy/h1"
	"github.com/sigil-mesh/sigil/proxy/hop"
)

func main() {
	mode := flag.String("mode", "", "client (plain in, mTLS out) or server (mTLS in, plain out)")
	listen := flag.String("listen", "", "address to listen on, host:port")
	upstream := flag.String("upstream", "", "address to forward to, host:port")
	cert := flag.String("cert", "", "SVID certificate chain, PEM")
	key := flag.String("key", "", "SVID private key, PEM")
	bundle := flag.String("bundle", "", "trust bundle, PEM")
	id := flag.String("id", "", "the SPIFFE ID the peer must present")
	procs := flag.Int("max-procs", 1, "GOMAXPROCS (the sidecar's default is 1)")
	loop := flag.Bool("loop", false, "forward on the epoll-loop data path (loop_linux.go) instead of proxy/h1")
	flag.Parse()
	// run returns only on an error: it serves until killed.
	err := run(*mode, *listen, *upstream, *cert, *key, *bundle, *id, *procs, *loop)
	fmt.Fprintln(os.Stderr, "floor:", err)
	os.Exit(1)
}

func run(mode, listen, upstream, certFile, keyFile, bundleFile, id string, procs int, loop bool) error {
	if listen == "" || upstream == "" || certFile == "" || keyFile == "" || bundleFile == "" || id == "" {
		return fmt.Errorf("-listen, -upstream, -cert, -key, -bundle and -id are all required")
	}
	runtime.GOMAXPROCS(procs)
	peer, err := spiffeid.FromString(id)
	if err != nil {
		return fmt.Errorf("-id: %w", err)
	}
	svid, err := x509svid.Load(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("-cert/-key: %w", err)
	}
	roots, err := x509bundle.Load(peer.TrustDomain(), bundleFile)
	if err != nil {
		return fmt.Errorf("-bundle: %w", err)
	}
	authorize := tlsconfig.AuthorizeID(peer)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	var dial func(context.Context) (net.Conn, error)
	switch mode {
	case "client":
		cfg := tlsconfig.MTLSClientConfig(svid, roots, authorize)
		cfg.MinVersion = tls.VersionTLS13
		if loop {
			log.Printf("floor %s (-loop) listening on %s, upstream %s", mode, ln.Addr(), upstream)
			return runLoop(mode, ln, cfg, upstream)
		}
		d := &tls.Dialer{Config: cfg}
		dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", upstream) }
	case "server":
		cfg := tlsconfig.MTLSServerConfig(svid, roots, authorize)
		cfg.MinVersion = tls.VersionTLS13
		if loop {
			log.Printf("floor %s (-loop) listening on %s, upstream %s", mode, ln.Addr(), upstream)
			return runLoop(mode, ln, cfg, upstream)
		}
		ln = tls.NewListener(ln, cfg)
		var d net.Dialer
		dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", upstream) }
	default:
		return fmt.Errorf("-mode: %q is neither client nor server", mode)
	}
	cl := &h1.Client{Dial: dial, MaxIdle: 1024, IdleTimeout: 90 * time.Second}
	srv := &h1.Server{Handler: forward(cl), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second,
		ErrorLog: log.New(os.Stderr, "floor: ", 0)}
	log.Printf("floor %s listening on %s, upstream %s", mode, ln.Addr(), upstream)
	ctx := context.Background()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go srv.Serve(ctx, c)
	}
}

// forward sends each request on through cl, hop-by-hop headers removed
// both ways, and copies the answer back.
func forward(cl *h1.Client) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := r.WithContext(r.Context())
		out.Header = r.Header.Clone()
		hop.RemoveHeaders(out.Header)
		out.RequestURI = ""
		resp, err := cl.RoundTrip(out)
		if err != nil {
			http.Error(w, "floor: upstream: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		hop.CopyResponse(w, resp)
	})
}
