package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs a Server on a loopback listener and returns a Client for it
// that counts its dials.
func serve(t *testing.T, h http.Handler) (*Server, *Client, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); s.Serve(context.Background(), c) }()
		}
	}()
	dials := new(atomic.Int64)
	cl := &Client{Dial: func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	}}
	t.Cleanup(func() {
		ln.Close()
		cl.CloseIdle(true)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		wg.Wait()
	})
	return s, cl, dials
}

func get(t *testing.T, cl *Client, method, path string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://svc"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cl.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, string(b)
}

func TestKeepAliveAndFraming(t *testing.T) {
	big := strings.Repeat("x", bodyBuffer+10)
	_, cl, dials := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			io.WriteString(w, "hello")
		case "/big":
			io.WriteString(w, big)
		case "/flushed":
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
		case "/trailers":
			w.Header().Set("Trailer", "Grpc-Status")
			w.WriteHeader(200)
			io.WriteString(w, "data")
			w.Header().Set("Grpc-Status", "0")
			w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Length", "3")
			w.Write(b[:3])
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	resp, body := get(t, cl, "GET", "/small", nil)
	if body != "hello" || resp.ContentLength != 5 || len(resp.TransferEncoding) != 0 {
		t.Errorf("small: %q, length %d, te %v", body, resp.ContentLength, resp.TransferEncoding)
	}
	resp, body = get(t, cl, "GET", "/big", nil)
	if body != big || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("big: %d bytes, te %v", len(body), resp.TransferEncoding)
	}
	if _, body = get(t, cl, "GET", "/flushed", nil); body != "ab" {
		t.Errorf("flushed: %q", body)
	}
	resp, body = get(t, cl, "GET", "/trailers", nil)
	if body != "data" || resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("X-Late") != "yes" {
		t.Errorf("trailers: %q %v", body, resp.Trailer)
	}
	if _, body = get(t, cl, "POST", "/echo", strings.NewReader("abcdef")); body != "abc" {
		t.Errorf("echo: %q", body)
	}
	resp, body = get(t, cl, "HEAD", "/small", nil)
	if body != "" || resp.StatusCode != 200 {
		t.Errorf("head: %d %q", resp.StatusCode, body)
	}
	if resp, _ = get(t, cl, "GET", "/nocontent", nil); resp.StatusCode != 204 {
		t.Errorf("204: %d", resp.StatusCode)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections for sequential requests, want 1 (keep-alive)", n)
	}
}

// A panicking handler ends its connection, and only that.
func TestHandlerPanic(t *testing.T) {
	_, cl, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		if r.URL.Path == "/bug" {
			panic("bug")
		}
		io.WriteString(w, "fine")
	}))
	for _, path := range []string{"/abort", "/bug"} {
		req, _ := http.NewRequest("POST", "http://svc"+path, nil)
		if _, err := cl.RoundTrip(req); err == nil {
			t.Errorf("%s: got a response from a handler that panicked", path)
		}
	}
	if _, body := get(t, cl, "GET", "/", nil); body != "fine" {
		t.Errorf("after panics: %q", body)
	}
}

// A body still held after its request ended reads nothing of the next.
func TestBodyEndsWithRequest(t *testing.T) {
	kept := make(chan io.Reader, 1)
	_, cl, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/keep" {
			kept <- r.Body
		}
	}))
	get(t, cl, "POST", "/keep", strings.NewReader("first"))
	get(t, cl, "POST", "/other", strings.NewReader("second request body"))
	if n, err := (<-kept).Read(make([]byte, 64)); n != 0 || !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Errorf("read after the request: %d bytes, %v; want ErrBodyReadAfterClose", n, err)
	}
}

func TestMaxRequestsPerConn(t *testing.T) {
	_, cl, dials := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	cl.MaxRequestsPerConn = 2
	for range 5 {
		get(t, cl, "GET", "/", nil)
	}
	if n := dials.Load(); n != 3 {
		t.Errorf("5 requests at 2 per connection used %d connections, want 3", n)
	}
}

func TestExpectContinue(t *testing.T) {
	_, cl, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	req, _ := http.NewRequest("PUT", "http://svc/", strings.NewReader("payload"))
	req.Header.Set("Expect", "100-continue")
	resp, err := cl.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "payload" || resp.StatusCode != 200 {
		t.Errorf("got %d %q, want 200 and the body (100 Continue skipped)", resp.StatusCode, b)
	}
}

// A handler that answers without reading a body the client held back for
// "100 Continue" ends the connection instead of asking for the body late.
func TestExpectContinueUnread(t *testing.T) {
	_, cl, dials := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
	}))
	for range 2 {
		req, _ := http.NewRequest("PUT", "http://svc/", strings.NewReader("payload"))
		req.Header.Set("Expect", "100-continue")
		resp, err := cl.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !resp.Close {
			t.Errorf("got %d, close=%v; want 403 and the connection closed", resp.StatusCode, resp.Close)
		}
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (none reused after an unread body)", n)
	}
}

func TestBadRequests(t *testing.T) {
	s, _, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	s.MaxHeaderBytes = 1 << 10
	for name, tc := range map[string]struct{ req, want string }{
		"garbage":   {"NOT HTTP\r\n\r\n", "400 Bad Request"},
		"too large": {"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", 8<<10) + "\r\n\r\n", "431 Request Header Fields Too Large"},
	} {
		a, b := net.Pipe()
		go s.Serve(context.Background(), b)
		go io.WriteString(a, tc.req)
		line, err := bufio.NewReader(a).ReadString('\n')
		a.Close()
		if err != nil || !strings.Contains(line, tc.want) {
			t.Errorf("%s: got %q, %v; want %s", name, line, err, tc.want)
		}
	}
}

func TestHijack(t *testing.T) {
	_, cl, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		c.Write([]byte("echo:" + line))
	}))
	cc, _, err := cl.get(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.close()
	io.WriteString(cc.c, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nping\n")
	resp, err := http.ReadResponse(cc.br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	line, _ := cc.br.ReadString('\n')
	if line != "echo:ping\n" {
		t.Errorf("after hijack got %q", line)
	}
}

func TestContextDeadline(t *testing.T) {
	release := make(chan struct{})
	_, cl, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc/", nil)
	start := time.Now()
	_, err := cl.RoundTrip(req)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("got %v after %v; want deadline exceeded at ~100ms", err, time.Since(start))
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if len(cl.idle) != 0 {
		t.Errorf("a timed-out connection went back to the pool")
	}
}

func TestShutdownWaitsForBusyConnections(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s, cl, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		io.WriteString(w, "done")
	}))
	get(t, cl, "GET", "/", nil) // leaves an idle connection
	got := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://svc/slow", nil)
		resp, err := (&Client{Dial: cl.Dial}).RoundTrip(req)
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b) + " close=" + strconv.FormatBool(resp.Close)
	}()
	<-entered
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.conns) == 1 }) // the idle one is gone
	select {
	case err := <-done:
		t.Fatalf("shutdown returned %v with a request in flight", err)
	default:
	}
	close(release)
	if r := <-got; r != "done close=true" {
		t.Errorf("in-flight request during shutdown got %q, want its answer with Connection: close", r)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FuzzServe feeds arbitrary bytes to the server loop: it must answer or
// close, never panic or hang.
func FuzzServe(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
		"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
		"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
	} {
		f.Add(s)
	}
	for _, c := range framingCases {
		f.Add(c.in)
	}
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		w.Header().Set("Trailer", "X-T")
		w.Write(b)
		w.Header().Set("X-T", "v")
	}), ReadHeaderTimeout: time.Second, IdleTimeout: time.Second}
	f.Fuzz(func(t *testing.T, in string) {
		s.Serve(context.Background(), &scriptConn{r: strings.NewReader(in)})
	})
}

// scriptConn reads a fixed input, then EOF, and discards what is written.
type scriptConn struct {
	net.Conn // nil: only the methods below are called
	r        *strings.Reader
}

func (c *scriptConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *scriptConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// A connection is retired at the earlier of its own bound and its peer
// certificate's expiry.
func TestConnNotAfter(t *testing.T) {
	early, late := time.Unix(1000, 0), time.Unix(2000, 0)
	for _, tc := range []struct {
		own, peer, want time.Time
	}{
		{early, late, early},
		{late, early, early},
		{time.Time{}, late, late},
		{early, time.Time{}, early},
	} {
		c := boundConn{own: tc.own, peer: tc.peer}
		if got := connNotAfter(c); !got.Equal(tc.want) {
			t.Errorf("own %v, peer %v: got %v, want %v", tc.own, tc.peer, got, tc.want)
		}
	}
}

type boundConn struct {
	net.Conn
	own, peer time.Time
}

func (c boundConn) NotAfter() time.Time { return c.own }

func (c boundConn) ConnectionState() tls.ConnectionState {
	if c.peer.IsZero() {
		return tls.ConnectionState{}
	}
	return tls.ConnectionState{PeerCertificates: []*x509.Certificate{{NotAfter: c.peer}}}
}

// TestConnContextPerConnection: the context a connection is served with
// reaches every request on it, for a cost paid once per connection, not
// once per request (a WithContext copy of each request was a sidecar's
// per-request CPU regression once its contexts carried values).
func TestConnContextPerConnection(t *testing.T) {
	type key struct{}
	const requests = 20
	script := strings.Repeat("GET /a?b=c HTTP/1.1\r\nHost: a\r\n\r\n", requests-1) +
		"GET /odd%20path HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n" // the strict parser's path
	var seen, missing int
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen++
		if r.Context().Value(key{}) == nil {
			missing++
		}
	})}
	serveAll := func(ctx context.Context) func() {
		return func() { s.Serve(ctx, &scriptConn{r: strings.NewReader(script)}) }
	}
	base := testing.AllocsPerRun(20, serveAll(context.Background()))
	seen, missing = 0, 0
	valued := testing.AllocsPerRun(20, serveAll(context.WithValue(context.Background(), key{}, true)))
	if seen == 0 || missing != 0 {
		t.Fatalf("%d of %d requests lacked the connection's context value", missing, seen)
	}
	// One template request per connection (and the strict parser's
	// request, which takes the context with WithContext).
	if extra := valued - base; extra > 2 {
		t.Errorf("a context with values costs %v allocations per connection of %d requests, want at most 2", extra, requests)
	}
}

// A body that came with its headers reports itself received; one whose
// bytes are still on the way (here: never sent) does not.
func TestBodyReceived(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		want         bool
	}{
		{"with headers", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", true},
		{"still to come", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe", false},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan bool, 1)
			s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rb, ok := r.Body.(interface{ Received() bool })
				got <- ok && rb.Received()
			})}
			s.Serve(context.Background(), &scriptConn{r: strings.NewReader(tc.script)})
			if g := <-got; g != tc.want {
				t.Fatalf("Received() = %v, want %v", g, tc.want)
			}
		})
	}
}
