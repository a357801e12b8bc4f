package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// semanticsApp is a callee app on net/http's server whose paths show what
// reached it: /echo answers the body it read and, in X-Seen-* headers, the
// request's trailer, Te, hop-by-hop headers and repeated header; /close
// answers with "Connection: close"; /trailers streams a chunked body with
// a trailer; /stream streams one without a length; /resphop answers with
// hop-by-hop headers of its own; /hold sends its head and waits for
// release before its body; /len answers with a Content-Length (also to
// HEAD), /notmodified with 304, /big with bigBody bytes. Any other path
// is answered with the path.
// bigBody is the size of /big's answer: many times the sidecars' stream
// and connection windows and the loopback socket buffers.
const bigBody = 32 << 20

// closedFrom receives the remote address of each connection /close was
// asked on.
func startSemanticsApp(t *testing.T) (addr string, holding <-chan struct{}, release chan<- struct{}, closedFrom <-chan string) {
	t.Helper()
	held, rel, from := make(chan struct{}, 1), make(chan struct{}), make(chan string, 16)
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var hop []string
		for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Upgrade", "X-Hop", "Transfer-Encoding"} {
			if _, ok := r.Header[k]; ok {
				hop = append(hop, k)
			}
		}
		if len(r.TransferEncoding) > 0 && r.Trailer.Get("X-Sum") == "" {
			hop = append(hop, "trailer-missing")
		}
		w.Header().Set("X-Seen-Trailer", r.Trailer.Get("X-Sum"))
		w.Header().Set("X-Seen-Te", strings.Join(r.Header["Te"], "|"))
		w.Header().Set("X-Seen-Hop", strings.Join(hop, "|"))
		w.Header().Set("X-Seen-Multi", strings.Join(r.Header["X-Multi"], "|"))
		w.Header().Set("X-Seen-Lower", strings.Join(r.Header["X-Lower-Case"], "|"))
		w.Write(b)
	})
	mux.HandleFunc("/close", func(w http.ResponseWriter, r *http.Request) {
		from <- r.RemoteAddr
		w.Header().Set("Connection", "close")
		io.WriteString(w, "closed")
	})
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Result")
		io.WriteString(w, "part1")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part2")
		w.Header().Set("X-Result", "ok")
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part1")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part2")
	})
	mux.HandleFunc("/resphop", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		held <- struct{}{}
		select {
		case <-rel:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "held")
	})
	mux.HandleFunc("/len", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	})
	mux.HandleFunc("/notmodified", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Etag", `"v1"`)
		w.WriteHeader(http.StatusNotModified)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(bigBody))
		chunk := bytes.Repeat([]byte("b"), 64<<10)
		for n := 0; n < bigBody; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), held, rel, from
}

// appConn is a connection from the app to web's outbound, written raw and
// read with net/http's response parser.
type appConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialApp(t *testing.T, addr string) *appConn {
	t.Helper()
	c := mustDial(t, addr)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &appConn{c: c, br: bufio.NewReader(c)}
}

func (a *appConn) write(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(a.c, s); err != nil {
		t.Fatal(err)
	}
}

// read reads one response to a GET and its body whole.
func (a *appConn) read(t *testing.T) (*http.Response, string) {
	t.Helper()
	return a.readFor(t, http.MethodGet)
}

// readFor reads one response to a request of method and its body whole.
func (a *appConn) readFor(t *testing.T, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(a.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading a body: %v", err)
	}
	return resp, string(b)
}

// closed reports whether the sidecar closed the connection (and sent
// nothing more).
func (a *appConn) closed() bool {
	n, err := a.br.Read(make([]byte, 1))
	return n == 0 && err == io.EOF
}

// TestHTTP1SemanticsAcrossMultiplexedHop: an app's HTTP/1.x requests
// travel between the sidecars over their shared HTTP/2 connection
// (h2UpgradePolicy UPGRADE) and keep their HTTP/1.1 meaning at both
// ends: pipelined requests answered in order, Connection: close from the
// caller or the callee honoured on that app's own connection (the
// callee's never reused, the caller's closed) and never on the shared one (a response held open on it meanwhile completes), Expect:
// 100-continue, chunked bodies with trailers both ways, an HTTP/1.0
// caller, hop-by-hop headers removed (RFC 9110 §7.6.1; RFC 9113 §8.2.2
// forbids them in HTTP/2) with only "Te: trailers" passed on, repeated
// fields in order and names in canonical case, and HEAD and 304 answers
// without a body.
//
// The same holds with DO_NOT_UPGRADE (today's default), over pooled
// HTTP/1.1 between the sidecars: the app cannot tell the two apart.
func TestHTTP1SemanticsAcrossMultiplexedHop(t *testing.T) {
	t.Parallel()
	for _, tr := range []struct{ name, rule string }{
		{"UPGRADE", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\nspec:\n  host: api\n  trafficPolicy:\n    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}\n"},
		{"DO_NOT_UPGRADE", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\nspec:\n  host: api\n  trafficPolicy:\n    connectionPool:\n      http: {h2UpgradePolicy: DO_NOT_UPGRADE}\n"},
	} {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			http1Semantics(t, tr.rule)
		})
	}
}

// http1Semantics runs TestHTTP1SemanticsAcrossMultiplexedHop's cases with
// rule (a DestinationRule for api; "" for none) in force.
func http1Semantics(t *testing.T, rule string) {
	addr, holding, release, closedFrom := startSemanticsApp(t)
	rm := startRawMesh(t, &rawApp{addr: addr})
	if rule != "" {
		tm := &trafficMesh{ids: rm.ids, backends: map[string]*backend{"api": nil}}
		tm.apply(t, rule)
	}
	out := rm.web.Outbound

	// A response held open on the shared connection for the whole test:
	// nothing below may close that connection.
	held := dialApp(t, out)
	held.write(t, "GET /hold HTTP/1.1\r\nHost: api\r\n\r\n")
	heldResp, err := http.ReadResponse(held.br, nil)
	if err != nil || heldResp.StatusCode != 200 {
		t.Fatalf("the held request: %v %v", heldResp, err)
	}
	<-holding

	t.Run("pipelined", func(t *testing.T) {
		c := dialApp(t, out)
		c.write(t, "GET /a HTTP/1.1\r\nHost: api\r\n\r\nGET /b HTTP/1.1\r\nHost: api\r\n\r\nGET /c HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
		for _, want := range []string{"/a", "/b", "/c"} {
			if resp, body := c.read(t); resp.StatusCode != 200 || body != want {
				t.Fatalf("got %d %q, want 200 %q (in order)", resp.StatusCode, body, want)
			}
		}
		if !c.closed() {
			t.Error("the connection stayed open after a request with Connection: close")
		}
	})
	t.Run("Connection close from the caller", func(t *testing.T) {
		c := dialApp(t, out)
		c.write(t, "GET /x HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
		resp, body := c.read(t)
		if resp.StatusCode != 200 || body != "/x" || !resp.Close {
			t.Errorf("got %d %q (close %v), want 200 /x with Connection: close", resp.StatusCode, body, resp.Close)
		}
		if !c.closed() {
			t.Error("the connection stayed open")
		}
	})
	t.Run("Connection close from the callee", func(t *testing.T) {
		c := dialApp(t, out)
		for range 3 {
			c.write(t, "GET /close HTTP/1.1\r\nHost: api\r\n\r\n")
			if resp, body := c.read(t); resp.StatusCode != 200 || body != "closed" || resp.Close {
				t.Fatalf("got %d %q (close %v), want 200 closed on a connection kept open (Connection is hop-by-hop)", resp.StatusCode, body, resp.Close)
			}
		}
		// The far sidecar never reused a connection the callee closed.
		conns := map[string]bool{}
		for range 3 {
			conns[<-closedFrom] = true
		}
		if len(conns) != 3 {
			t.Errorf("the callee got three Connection: close answers' requests on %d connections, want 3", len(conns))
		}
	})
	t.Run("Expect 100-continue", func(t *testing.T) {
		c := dialApp(t, out)
		c.write(t, "POST /echo HTTP/1.1\r\nHost: api\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		line, err := c.br.ReadString('\n')
		if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("before the body: %q %v, want 100 Continue", line, err)
		}
		if blank, _ := c.br.ReadString('\n'); blank != "\r\n" {
			t.Fatalf("after 100 Continue: %q", blank)
		}
		c.write(t, "hello")
		if resp, body := c.read(t); resp.StatusCode != 200 || body != "hello" {
			t.Errorf("got %d %q, want 200 hello", resp.StatusCode, body)
		}
	})
	t.Run("chunked request with trailers", func(t *testing.T) {
		c := dialApp(t, out)
		c.write(t, "POST /echo HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nTE: trailers\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n")
		resp, body := c.read(t)
		if resp.StatusCode != 200 || body != "hello world" || resp.Header.Get("X-Seen-Trailer") != "42" || resp.Header.Get("X-Seen-Hop") != "" {
			t.Errorf("got %d %q, trailer %q, hop headers %q; want 200 \"hello world\", 42, none", resp.StatusCode, body, resp.Header.Get("X-Seen-Trailer"), resp.Header.Get("X-Seen-Hop"))
		}
	})
	t.Run("chunked response with trailers", func(t *testing.T) {
		c := dialApp(t, out)
		c.write(t, "GET /trailers HTTP/1.1\r\nHost: api\r\nTE: trailers\r\n\r\n")
		resp, body := c.read(t)
		if resp.StatusCode != 200 || body != "part1part2" || resp.Trailer.Get("X-Result") != "ok" {
			t.Errorf("got %d %q, trailers %v; want 200 part1part2 with X-Result: ok", resp.StatusCode, body, resp.Trailer)
		}
	})
	t.Run("HTTP/1.0 caller", func(t *testing.T) {
		for _, path := range []string{"/ten", "/stream"} {
			c := dialApp(t, out)
			c.write(t, "GET "+path+" HTTP/1.0\r\nHost: api\r\n\r\n")
			resp, body := c.read(t)
			want := map[string]string{"/ten": "/ten", "/stream": "part1part2"}[path]
			if resp.StatusCode != 200 || body != want || len(resp.TransferEncoding) > 0 {
				t.Errorf("%s: got %d %q (transfer-encoding %v), want 200 %q unchunked", path, resp.StatusCode, body, resp.TransferEncoding, want)
			}
			if !c.closed() {
				t.Errorf("%s: the HTTP/1.0 connection stayed open", path)
			}
		}
	})
	t.Run("bodiless responses", func(t *testing.T) {
		// HEAD keeps the callee's Content-Length with no body, 304 has
		// none: the next response on the connection must parse.
		c := dialApp(t, out)
		c.write(t, "HEAD /len HTTP/1.1\r\nHost: api\r\n\r\nGET /notmodified HTTP/1.1\r\nHost: api\r\nIf-None-Match: \"v1\"\r\n\r\nGET /after HTTP/1.1\r\nHost: api\r\n\r\n")
		if resp, body := c.readFor(t, http.MethodHead); resp.StatusCode != 200 || resp.ContentLength != 5 || body != "" {
			t.Errorf("HEAD: %d, length %d, body %q; want 200, 5, none", resp.StatusCode, resp.ContentLength, body)
		}
		if resp, body := c.read(t); resp.StatusCode != http.StatusNotModified || resp.Header.Get("Etag") != `"v1"` || body != "" {
			t.Errorf("304: %d, etag %q, body %q", resp.StatusCode, resp.Header.Get("Etag"), body)
		}
		if resp, body := c.read(t); resp.StatusCode != 200 || body != "/after" {
			t.Errorf("after them: %d %q, want 200 /after", resp.StatusCode, body)
		}
	})
	t.Run("hop-by-hop headers", func(t *testing.T) {
		c := dialApp(t, out)
		c.write(t, "GET /echo HTTP/1.1\r\nHost: api\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\nX-Multi: 1\r\nX-Multi: 2\r\nx-lower-CASE: v\r\n\r\n")
		resp, _ := c.read(t)
		for k, want := range map[string]string{"X-Seen-Hop": "", "X-Seen-Te": "trailers", "X-Seen-Multi": "1|2", "X-Seen-Lower": "v"} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s: %q, want %q", k, got, want)
			}
		}
		c.write(t, "GET /resphop HTTP/1.1\r\nHost: api\r\n\r\n")
		resp, body := c.read(t)
		if body != "ok" || resp.Header.Get("X-Resp-Hop") != "" || resp.Header.Get("Keep-Alive") != "" || resp.Close {
			t.Errorf("the callee's hop-by-hop headers reached the caller: %v", resp.Header)
		}
	})

	close(release)
	if b, err := io.ReadAll(heldResp.Body); err != nil || string(b) != "held" {
		t.Errorf("the response held open on the shared connection: %q %v, want held", b, err)
	}
}

// TestStalledCallerDoesNotStallSharedConnection: an app that stops
// reading a large answer holds up only its own stream on the sidecars'
// shared HTTP/2 connection (flow control, RFC 9113 §5.2): 100 requests
// from other app connections meanwhile complete, and the stalled answer
// then arrives whole.
func TestStalledCallerDoesNotStallSharedConnection(t *testing.T) {
	t.Parallel()
	addr, _, _, _ := startSemanticsApp(t)
	rm := startRawMesh(t, &rawApp{addr: addr})
	tm := &trafficMesh{ids: rm.ids, backends: map[string]*backend{"api": nil}}
	tm.apply(t, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\nspec:\n  host: api\n  trafficPolicy:\n    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}\n")
	out := rm.web.Outbound

	stalled := dialApp(t, out)
	stalled.c.SetDeadline(time.Now().Add(60 * time.Second))
	stalled.write(t, "GET /big HTTP/1.1\r\nHost: api\r\n\r\n")
	resp, err := http.ReadResponse(stalled.br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the large answer: %v %v", resp, err)
	}
	// Its head is here and it is not read further: its stream's window
	// and every buffer on the way fill up.

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", out, 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			for j := range 10 {
				path := fmt.Sprintf("/fast-%d-%d", i, j)
				if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil {
					errs <- err
					return
				}
				r, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", path, err)
					return
				}
				b, err := io.ReadAll(r.Body)
				if err != nil || r.StatusCode != 200 || string(b) != path {
					errs <- fmt.Errorf("%s: %d %q %v", path, r.StatusCode, b, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error("a request beside the stalled one:", err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != bigBody {
		t.Errorf("the stalled answer, read at last: %d bytes, %v; want %d", n, err, bigBody)
	}
}
