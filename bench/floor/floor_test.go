package main

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/internal/testpki"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// testTLS returns the mTLS configurations of the pair's client and
// server: one SVID for both, as meshbench runs them, from a CA made
// here.
func testTLS(t *testing.T) (client, server *tls.Config) {
	t.Helper()
	ca := testpki.NewAuthority(t)
	id := spiffeid.RequireFromString("spiffe://example.org/ns/bench/sa/bench")
	cert, leaf := ca.Leaf(t, &x509.Certificate{URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	svid := &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: cert.PrivateKey.(crypto.Signer)}
	roots := x509bundle.FromX509Authorities(id.TrustDomain(), []*x509.Certificate{ca.Cert})
	client = tlsconfig.MTLSClientConfig(svid, roots, tlsconfig.AuthorizeID(id))
	server = tlsconfig.MTLSServerConfig(svid, roots, tlsconfig.AuthorizeID(id))
	client.MinVersion, server.MinVersion = tls.VersionTLS13, tls.VersionTLS13
	return client, server
}

// startPair runs a floor pair on path in front of backend and returns
// the client side's address (plain HTTP/1.1).
func startPair(t *testing.T, path, backend string) string {
	return startPairTimeouts(t, path, backend, timeouts{header: 10 * time.Second, idle: 90 * time.Second})
}

// startPairTimeouts is startPair with the pair's timeouts to.
func startPairTimeouts(t *testing.T, path, backend string, to timeouts) string {
	client, _ := startPairAddrs(t, path, backend, to)
	return client
}

// startPairAddrs is startPairTimeouts, also returning the server side's
// address (mTLS).
func startPairAddrs(t *testing.T, path, backend string, to timeouts) (client, server string) {
	t.Helper()
	cliCfg, srvCfg := testTLS(t)
	lnS, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lnC, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lnS.Close(); lnC.Close() })
	go serve("server", path, lnS, srvCfg, backend, to)
	go serve("client", path, lnC, cliCfg, lnS.Addr().String(), to)
	return lnC.Addr().String(), lnS.Addr().String()
}

// appConns and appRequests count the connections and the requests the
// backends of this package's tests accepted.
var appConns, appRequests atomic.Int64

// slowApp is how long the backend's /slow takes to answer.
const slowApp = 900 * time.Millisecond

// backend answers what the pair's tests ask of an app.
func backend(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		// Which of the hop-by-hop fields the client sent arrived.
		for _, h := range []string{"Keep-Alive", "X-Named-Hop", "Proxy-Connection", "Proxy-Authorization"} {
			if r.Header.Get(h) != "" {
				w.Header().Add("X-Arrived", h)
			}
		}
		w.Header().Set("X-End-To-End", r.Header.Get("X-End-To-End"))
		// Hop-by-hop fields of the answer, for the proxy to remove.
		w.Header().Set("Connection", "X-Answer-Hop")
		w.Header().Set("X-Answer-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		io.WriteString(w, strings.Repeat("x", 1024))
	})
	mux.HandleFunc("/sum", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x %s", n, h.Sum(nil), r.Trailer.Get("X-Request-Trailer"))
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		for i := range 5 {
			fmt.Fprintf(w, "part %d;", i)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Checksum", "done")
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(slowApp) // an app that takes its time: the proxy's timeouts must not cut it
		io.WriteString(w, "slow done")
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appRequests.Add(1)
		mux.ServeHTTP(w, r)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			appConns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// TestFloorPaths holds the three data paths of the floor to HTTP/1.1's
// framing and a proxy's duties, with net/http as the client and app:
// keep-alive (connections reused), hop-by-hop fields removed both ways,
// bodies of known length and chunked both ways with trailers both ways,
// HEAD and 204 without bodies (the next answer on the connection is
// whole), pipelined requests answered in order, Connection: close, and
// a malformed head refused.
func TestFloorPaths(t *testing.T) {
	app := backend(t)
	appAddr := strings.TrimPrefix(app.URL, "http://")
	for _, path := range []string{"h1", "loop"} {
		t.Run(path, func(t *testing.T) {
			addr := startPair(t, path, appAddr)
			tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			base := "http://" + addr
			// reused reports whether req went on a kept-alive connection.
			var reused bool
			traced := func(req *http.Request) *http.Request {
				return req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
					GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
			}

			for i := range 20 {
				req, _ := http.NewRequest("GET", base+"/echo", nil)
				req.Header.Set("Connection", "X-Named-Hop")
				req.Header.Set("X-Named-Hop", "1")
				req.Header.Set("Keep-Alive", "timeout=5")
				req.Header.Set("Proxy-Connection", "keep-alive")
				req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==") // the proxy's credentials, never the app's
				req.Header.Set("X-End-To-End", fmt.Sprint(i))
				resp, err := c.Do(traced(req))
				if err != nil {
					t.Fatalf("GET %d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || len(body) != 1024 || resp.Header.Get("X-End-To-End") != fmt.Sprint(i) {
					t.Fatalf("GET %d: %d, %d bytes, X-End-To-End %q", i, resp.StatusCode, len(body), resp.Header.Get("X-End-To-End"))
				}
				if a := resp.Header.Values("X-Arrived"); len(a) > 0 {
					t.Fatalf("hop-by-hop fields reached the app: %v", a)
				}
				if resp.Header.Get("X-Answer-Hop") != "" || resp.Header.Get("Keep-Alive") != "" {
					t.Fatalf("hop-by-hop fields of the answer reached the client: %v", resp.Header)
				}
				if i > 0 && !reused {
					t.Fatalf("GET %d went on a new connection: keep-alive broken", i)
				}
			}

			payload := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
			for _, chunked := range []bool{false, true} {
				var body io.Reader = bytes.NewReader(payload)
				want := fmt.Sprintf("%d %x ", len(payload), sha256.Sum256(payload))
				req, _ := http.NewRequest("POST", base+"/sum", body)
				if chunked {
					req.ContentLength = -1 // unknown length: net/http sends it chunked, with the trailer
					req.Trailer = http.Header{"X-Request-Trailer": {"sent"}}
					want += "sent"
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("POST (chunked %v): %v", chunked, err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(got) != want {
					t.Fatalf("POST (chunked %v): app saw %q, want %q", chunked, got, want)
				}
			}

			resp, err := c.Get(base + "/chunked")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(got) != "part 0;part 1;part 2;part 3;part 4;" || resp.Trailer.Get("X-Checksum") != "done" {
				t.Fatalf("chunked response: %q, trailer %v", got, resp.Trailer)
			}

			// A bodiless answer (HEAD's, 204) ends where its head does:
			// the next request on the connection gets its own answer.
			for _, tc := range []struct{ method, path string }{{"HEAD", "/echo"}, {"GET", "/empty"}} {
				req, _ := http.NewRequest(tc.method, base+tc.path, nil)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", tc.method, tc.path, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				req, _ = http.NewRequest("GET", base+"/echo", nil)
				req.Header.Set("X-End-To-End", "after "+tc.method)
				resp, err = c.Do(traced(req))
				if err != nil {
					t.Fatalf("GET after %s %s: %v", tc.method, tc.path, err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !reused || len(got) != 1024 || resp.Header.Get("X-End-To-End") != "after "+tc.method {
					t.Fatalf("GET after %s %s: reused %v, %d bytes, answer to %q", tc.method, tc.path, reused, len(got), resp.Header.Get("X-End-To-End"))
				}
			}

			// Raw connection: two pipelined requests, the second asking to close.
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(conn, "GET /echo HTTP/1.1\r\nHost: a\r\nX-End-To-End: one\r\n\r\nGET /echo HTTP/1.1\r\nHost: a\r\nX-End-To-End: two\r\nConnection: close\r\n\r\n")
			br := bufio.NewReader(conn)
			for _, want := range []string{"one", "two"} {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("pipelined %s: %v", want, err)
				}
				io.Copy(io.Discard, resp.Body)
				if resp.Header.Get("X-End-To-End") != want {
					t.Fatalf("pipelined: got the answer to %q, want %q", resp.Header.Get("X-End-To-End"), want)
				}
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after Connection: close: %v, want EOF", err)
			}

			bad, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			bad.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(bad, "GET /echo HTTP/1.1\r\nHost: a\r\n folded: no\r\n\r\n")
			resp, err = http.ReadResponse(bufio.NewReader(bad), nil)
			if err != nil {
				t.Fatalf("malformed head: %v", err)
			}
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("malformed head: status %d, want 400", resp.StatusCode)
			}
		})
	}
}

// TestFloorTimeouts holds every path to the same client timeouts: a head
// begun and not finished ends the connection after the header timeout,
// and a kept-alive connection with no next request after the idle one;
// a slow app (an exchange in flight) is waited for.
func TestFloorTimeouts(t *testing.T) {
	app := backend(t)
	appAddr := strings.TrimPrefix(app.URL, "http://")
	to := timeouts{header: 300 * time.Millisecond, idle: 600 * time.Millisecond}
	for _, path := range []string{"h1", "loop"} {
		t.Run(path, func(t *testing.T) {
			addr := startPairTimeouts(t, path, appAddr, to)
			// ended dials, sends req, reads the answers through the close
			// and returns how long the connection lasted.
			ended := func(req string) (time.Duration, string) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				start := time.Now()
				io.WriteString(c, req)
				b, err := io.ReadAll(c)
				if err != nil && !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("%q: %v after %v", req, err, time.Since(start))
				}
				return time.Since(start), string(b)
			}
			if d, _ := ended("GET /echo HTTP/1.1\r\nHost: a\r\n"); d < to.header*3/4 || d > to.header+3*time.Second {
				t.Errorf("a head left unfinished ended the connection after %v, want about %v", d, to.header)
			}
			d, got := ended("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
			if !strings.Contains(got, "slow done") {
				t.Errorf("a slow app's answer was cut: %q", got)
			}
			if d < to.idle*3/4+slowApp || d > slowApp+to.idle+3*time.Second {
				t.Errorf("after an answer the connection ended after %v, want about %v (app) + %v (idle)", d, slowApp, to.idle)
			}
		})
	}
}

// TestFloorRefusesUnauthenticated holds every path's server side to
// mTLS: a caller without a client certificate gets no answer, and the
// app is never dialed for it.
func TestFloorRefusesUnauthenticated(t *testing.T) {
	app := backend(t)
	appAddr := strings.TrimPrefix(app.URL, "http://")
	for _, path := range []string{"h1", "loop"} {
		t.Run(path, func(t *testing.T) {
			_, server := startPairAddrs(t, path, appAddr, timeouts{header: 10 * time.Second, idle: 90 * time.Second})
			before := appConns.Load()
			c, err := tls.Dial("tcp", server, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
			if err == nil {
				// TLS 1.3: the server's verdict on the client comes after
				// the client's handshake, with the first read.
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
				b, rerr := io.ReadAll(c)
				if rerr == nil || len(b) > 0 {
					t.Fatalf("a caller without a certificate got %q (read error %v)", b, rerr)
				}
			}
			if n := appConns.Load() - before; n != 0 {
				t.Fatalf("the app was dialed %d times for a caller the server refused", n)
			}
		})
	}
}

// TestLoopRefusesUnsupported holds the loop's documented limits to a
// clear answer: a request it does not carry (HTTP/1.0, CONNECT, an
// Upgrade) gets 501 Not Implemented (RFC 9110 §15.6.2: the server does
// not support what the request needs) and the connection closes; the app
// never gets the request (nor a connection: the loop dials on the first
// request it forwards).
func TestLoopRefusesUnsupported(t *testing.T) {
	app := backend(t)
	addr := startPair(t, "loop", strings.TrimPrefix(app.URL, "http://"))
	for _, req := range []string{
		"GET /echo HTTP/1.0\r\nHost: a\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	} {
		before := appRequests.Load()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		if resp.StatusCode != http.StatusNotImplemented || !resp.Close {
			t.Errorf("%q: status %d, close %v; want 501 and close", req, resp.StatusCode, resp.Close)
		}
		// The answer's body runs to the close (proxy/h1's answer to a
		// request it cannot read): reading it whole is reading to EOF.
		if body, err := io.ReadAll(resp.Body); err != nil || string(body) != "501 Not Implemented\n" {
			t.Errorf("%q: body %q, %v; want the status and EOF", req, body, err)
		}
		if n := appRequests.Load() - before; n != 0 {
			t.Errorf("%q: the app got %d requests", req, n)
		}
		c.Close()
	}
}
