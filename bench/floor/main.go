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
//	floor [-path h1|loop] -mode client -listen A -upstream B -cert C -key K -bundle P -id SPIFFE-ID
//	floor [-path h1|loop] -mode server -listen B -upstream APP -cert C -key K -bundle P -id SPIFFE-ID
//
// In client mode it listens in plain HTTP/1.1 and calls B over mTLS,
// accepting only a server whose SVID is -id; in server mode it listens
// with mTLS, accepting only clients whose SVID is -id, and calls APP in
// plain HTTP/1.1. Errors from the upstream are answered 502.
//
// -path chooses the data path, for the experiment of issue 17 that asks
// whether reading only ready sockets closes the gap to nginx: h1 (the
// default) is proxy/h1 on Go's poller, as the sidecar runs; loop is
// package proxy/loop with no Handler, an epoll loop relaying bytes with
// crypto/tls driven from its buffers and no goroutine per connection.
// meshbench runs them as the floor and floor-loop setups. (A third path,
// pollconn, proxy/h1 over a poller of the floor's own, answered its
// question in session 27 and was removed: bench/README.md, "The
// transport on an event loop".)
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
	path := flag.String("path", "h1", "data path: h1 (proxy/h1 on Go's poller) or loop (proxy/loop: an epoll loop relaying bytes)")
	flag.Parse()
	// run returns only on an error: it serves until killed.
	err := run(*mode, *listen, *upstream, *cert, *key, *bundle, *id, *procs, *path)
	fmt.Fprintln(os.Stderr, "floor:", err)
	os.Exit(1)
}

func run(mode, listen, upstream, certFile, keyFile, bundleFile, id string, procs int, path string) error {
	if listen == "" || upstream == "" || certFile == "" || keyFile == "" || bundleFile == "" || id == "" {
		return fmt.Errorf("-listen, -upstream, -cert, -key, -bundle and -id are all required")
	}
	if path != "h1" && path != "loop" {
		return fmt.Errorf("-path: %q is neither h1 nor loop", path)
	}
	if mode != "client" && mode != "server" {
		return fmt.Errorf("-mode: %q is neither client nor server", mode)
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
	cfg := tlsconfig.MTLSClientConfig(svid, roots, authorize)
	if mode == "server" {
		cfg = tlsconfig.MTLSServerConfig(svid, roots, authorize)
	}
	cfg.MinVersion = tls.VersionTLS13
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	log.Printf("floor %s (-path %s) listening on %s, upstream %s", mode, path, ln.Addr(), upstream)
	return serve(mode, path, ln, cfg, upstream, timeouts{header: 10 * time.Second, idle: 90 * time.Second})
}

// timeouts bound, on every path, how long a client may take to finish a
// request head it has begun (header; on a new connection, from its
// start) and to begin the next request on a kept-alive connection
// (idle). While an exchange is in flight neither applies, as in
// proxy/h1's server.
type timeouts struct{ header, idle time.Duration }

// serve forwards what ln accepts to upstream on the data path named
// path, until Accept fails. In client mode the accepted connections are
// plain and the upstream ones mTLS with cfg; in server mode the reverse.
func serve(mode, path string, ln net.Listener, cfg *tls.Config, upstream string, to timeouts) error {
	if path == "loop" {
		return runLoop(mode, ln, cfg, upstream, to)
	}
	var d net.Dialer
	dial := func(ctx context.Context) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", upstream)
		if err != nil {
			return nil, err
		}
		if mode == "server" {
			return c, nil
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			tc.Close()
			return nil, err
		}
		return tc, nil
	}
	cl := &h1.Client{Dial: dial, MaxIdle: 1024, IdleTimeout: 90 * time.Second}
	srv := &h1.Server{Handler: forward(cl), ReadHeaderTimeout: to.header, IdleTimeout: to.idle,
		ErrorLog: log.New(os.Stderr, "floor: ", 0)}
	ctx := context.Background()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		if mode == "server" {
			c = tls.Server(c, cfg) // the handshake runs on Serve's first read
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
