//go:build linux

package loop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// TestRelay runs requests with bodies of both framings both ways over
// one kept-alive connection, for plain and TLS callers and upstreams.
func TestRelay(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		tlsCallers, tlsUpstream bool
	}{{"plain", false, false}, {"tls-caller", true, false}, {"tls-upstream", false, true}, {"tls-both", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := &echo{}
			var up *httptest.Server
			var cfg Config
			if tc.tlsUpstream {
				up = httptest.NewTLSServer(e)
				t.Cleanup(up.Close)
				pool := up.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
				cfg.UpstreamTLS = &tls.Config{RootCAs: pool, ServerName: "example.com"}
			} else {
				up = upstream(t, e)
			}
			var sawTLS atomic.Bool
			cfg.Handler = handlerFunc(func(c *Caller, h *h1.Head) Verdict {
				sawTLS.Store(c.TLS() != nil && c.TLS().HandshakeComplete && c.Value == "caller")
				return Verdict{}
			})
			f := start(t, cfg, up.Listener.Addr().String(), tc.tlsCallers)
			cl := f.client()
			var conns atomic.Int32
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
				if !i.Reused {
					conns.Add(1)
				}
			}}
			do := func(req *http.Request) *http.Response {
				t.Helper()
				resp, err := cl.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			for i := range 3 {
				resp := do(must(http.NewRequest("GET", f.url(fmt.Sprintf("/get%d", i)), nil)))
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != fmt.Sprintf("GET /get%d ", i) {
					t.Fatalf("GET: %d %q", resp.StatusCode, b)
				}
			}
			// Content-Length body.
			body := strings.Repeat("x", 100000)
			resp := do(must(http.NewRequest("POST", f.url("/cl"), strings.NewReader(body))))
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "POST /cl "+body {
				t.Fatalf("POST with Content-Length: got %d bytes", len(b))
			}
			// Chunked body with a trailer, answered chunked with a trailer.
			req := must(http.NewRequest("POST", f.url("/chunked"), io.MultiReader(strings.NewReader("abc"), strings.NewReader("def"))))
			req.ContentLength = -1
			req.TransferEncoding = []string{"chunked"}
			req.Trailer = http.Header{"X-Sum": {"42"}}
			resp = do(req)
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "POST /chunked abcdef" || resp.Header.Get("X-Got-Trailer-X-Sum") != "42" {
				t.Fatalf("chunked POST: %q, header %v", b, resp.Header)
			}
			if got := conns.Load(); got != 1 {
				t.Errorf("%d connections for 5 requests, want 1 kept alive", got)
			}
			if tc.tlsCallers != sawTLS.Load() {
				t.Errorf("Caller.TLS/Value as seen by the Handler: %v, want TLS %v", sawTLS.Load(), tc.tlsCallers)
			}
			if got := len(e.requests()); got != 5 {
				t.Errorf("upstream saw %d requests, want 5", got)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestChunkedResponseTrailer: a chunked answer's trailer and chunk
// extensions reach the caller.
func TestChunkedResponseTrailer(t *testing.T) {
	addr := rawUpstream(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: v\r\n\r\n")
		io.Copy(io.Discard, br)
	})
	f := start(t, Config{}, addr, false)
	c := f.dial()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, body := readResponse(t, br, "GET")
	if body != "abcde" || resp.Trailer.Get("X-T") != "v" {
		t.Fatalf("body %q trailer %v", body, resp.Trailer)
	}
}

// denyPOST answers POST /deny with a 403 and a body, and records its
// exchanges.
func denyPOST(xs chan *exchangeRec) Handler {
	return handlerFunc(func(c *Caller, h *h1.Head) Verdict {
		x := newExchange()
		xs <- x
		if string(h.Method) == "POST" && string(h.Target) == "/deny" {
			return Verdict{Answer: []byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\ndenied\n"), Exchange: x}
		}
		return Verdict{Exchange: x}
	})
}

// TestAnswerDropsBody: a request answered locally has its body read and
// dropped, never parsed as a request, whatever its framing and however
// it is split, and the next request on the connection is served.
func TestAnswerDropsBody(t *testing.T) {
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name string
		req  string
	}{
		{"content-length", fmt.Sprintf("POST /deny HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled)},
		{"chunked", fmt.Sprintf("POST /deny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x;a=b\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: GET /smuggled\r\n\r\n", len(smuggled), smuggled, len(smuggled), smuggled)},
		{"no-body", "POST /deny HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"},
	} {
		for _, split := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/split=%v", tc.name, split), func(t *testing.T) {
				e := &echo{}
				up := upstream(t, e)
				xs := make(chan *exchangeRec, 10)
				f := start(t, Config{Handler: denyPOST(xs)}, up.Listener.Addr().String(), false)
				c := f.dial()
				next := "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
				br := bufio.NewReader(c)
				if split {
					// Byte by byte: the dropping spans reads.
					for i := 0; i < len(tc.req); i++ {
						if _, err := c.Write([]byte{tc.req[i]}); err != nil {
							t.Fatal(err)
						}
					}
					resp, body := readResponse(t, br, "POST")
					if resp.StatusCode != 403 || body != "denied\n" {
						t.Fatalf("answer %d %q", resp.StatusCode, body)
					}
					io.WriteString(c, next)
				} else {
					io.WriteString(c, tc.req+next) // pipelined after the answered one
					resp, body := readResponse(t, br, "POST")
					if resp.StatusCode != 403 || body != "denied\n" {
						t.Fatalf("answer %d %q", resp.StatusCode, body)
					}
				}
				resp, body := readResponse(t, br, "GET")
				if resp.StatusCode != 200 || body != "GET /next " {
					t.Fatalf("next request: %d %q", resp.StatusCode, body)
				}
				if got := e.requests(); len(got) != 1 || got[0] != "GET /next" {
					t.Fatalf("upstream saw %q, want only GET /next", got)
				}
				if d := (<-xs).await(t); d.status != 403 || d.err != nil {
					t.Errorf("answered exchange: Done(%d, %v), want (403, nil)", d.status, d.err)
				}
				if d := (<-xs).await(t); d.status != 200 || d.err != nil {
					t.Errorf("forwarded exchange: Done(%d, %v), want (200, nil)", d.status, d.err)
				}
			})
		}
	}
}

// TestReplacementHead: a Handler's Head goes upstream in place of the
// received one, the body following as received.
func TestReplacementHead(t *testing.T) {
	e := &echo{}
	up := upstream(t, e)
	h := handlerFunc(func(c *Caller, h *h1.Head) Verdict {
		var b []byte
		b = append(b, "POST /rewritten HTTP/1.1\r\n"...)
		for i := range h.Len() {
			name, value := h.Field(i)
			b = fmt.Appendf(b, "%s: %s\r\n", name, value)
		}
		b = append(b, "X-Sigil: yes\r\n\r\n"...)
		return Verdict{Head: b}
	})
	f := start(t, Config{Handler: h}, up.Listener.Addr().String(), false)
	resp, err := f.client().Post(f.url("/orig"), "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "POST /rewritten payload" || resp.Header.Get("X-Saw-Sigil") != "yes" {
		t.Fatalf("upstream answered %q, X-Saw-Sigil %q", b, resp.Header.Get("X-Saw-Sigil"))
	}
}

// TestExchangeDone: Done once per request, with the answer's status and
// the right error.
func TestExchangeDone(t *testing.T) {
	t.Run("ok-and-answered", func(t *testing.T) {
		up := upstream(t, &echo{})
		xs := make(chan *exchangeRec, 10)
		f := start(t, Config{Handler: denyPOST(xs)}, up.Listener.Addr().String(), false)
		cl := f.client()
		for _, path := range []string{"/ok", "/deny"} {
			resp, err := cl.Post(f.url(path), "text/plain", strings.NewReader("b"))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		for _, want := range []int{200, 403} {
			x := <-xs
			if d := x.await(t); d.status != want || d.err != nil {
				t.Errorf("Done(%d, %v), want (%d, nil)", d.status, d.err, want)
			}
			f.l.Close() // every exchange is over: a second Done would come now
			if n := x.count(); n != 1 {
				t.Errorf("Done called %d times", n)
			}
		}
	})
	t.Run("upstream-hangs-up", func(t *testing.T) {
		addr := rawUpstream(t, func(c net.Conn) {
			http.ReadRequest(bufio.NewReader(c))
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
			c.Close()
		})
		xs := make(chan *exchangeRec, 10)
		f := start(t, Config{Handler: denyPOST(xs)}, addr, false)
		c := f.dial()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		x := <-xs
		if d := x.await(t); d.status != 200 || !errors.Is(d.err, ErrHungUp) {
			t.Errorf("Done(%d, %v), want (200, ErrHungUp)", d.status, d.err)
		}
		b, _ := io.ReadAll(c)
		if !strings.HasSuffix(string(b), "only ten..") {
			t.Errorf("caller got %q", b)
		}
		f.l.Close()
		if n := x.count(); n != 1 {
			t.Errorf("Done called %d times", n)
		}
	})
}

// TestUnreachable: a failed dial answers BadGateway, tells the Exchange
// (502, ErrUnreachable) and closes the caller's connection.
func TestUnreachable(t *testing.T) {
	for _, custom := range []bool{false, true} {
		t.Run(fmt.Sprintf("custom=%v", custom), func(t *testing.T) {
			xs := make(chan *exchangeRec, 10)
			dialErr := errors.New("no route")
			cfg := Config{Handler: denyPOST(xs), Dial: func(context.Context) (net.Conn, error) { return nil, dialErr }}
			want := "502 Bad Gateway\n"
			if custom {
				cfg.BadGateway = []byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
				want = "nope"
			}
			f := start(t, cfg, "", false)
			c := f.dial()
			// A pipelined request behind the first is not served.
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReader(c)
			resp, body := readResponse(t, br, "POST")
			if resp.StatusCode != 502 || body != want {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			expectEOF(t, br)
			d := (<-xs).await(t)
			if d.status != 502 || !errors.Is(d.err, ErrUnreachable) || !errors.Is(d.err, dialErr) {
				t.Errorf("Done(%d, %v), want (502, ErrUnreachable and the dial's error)", d.status, d.err)
			}
			select {
			case x := <-xs:
				t.Errorf("the pipelined request reached the Handler (%v)", x)
			default:
			}
		})
	}
}

// TestVerdictClose: Close ends the caller's connection once the
// exchange is over, answered or forwarded.
func TestVerdictClose(t *testing.T) {
	up := upstream(t, &echo{})
	h := handlerFunc(func(c *Caller, h *h1.Head) Verdict {
		v := Verdict{Close: true}
		if string(h.Target) == "/answer" {
			v.Answer = []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
		}
		return v
	})
	f := start(t, Config{Handler: h}, up.Listener.Addr().String(), false)
	for _, path := range []string{"/forward", "/answer"} {
		c := f.dial()
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		expectEOF(t, br)
	}
}

// TestTimeouts: a head begun and not finished, and a kept-alive
// connection with no next request, are closed once their timeout
// passes; an exchange in flight is not bounded.
func TestTimeouts(t *testing.T) {
	slow := make(chan struct{})
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-slow
		}
		io.WriteString(w, "ok")
	}))
	defer close(slow)
	const to = 150 * time.Millisecond
	f := start(t, Config{HeaderTimeout: to, IdleTimeout: to}, up.Listener.Addr().String(), false)
	closedWithin := func(c net.Conn, what string, from time.Time) {
		t.Helper()
		expectEOF(t, bufio.NewReader(c))
		if d := time.Since(from); d < to || d > to+2*time.Second {
			t.Errorf("%s: closed after %v, want about %v", what, d, to)
		}
	}
	t.Run("header", func(t *testing.T) {
		c := f.dial()
		start := time.Now()
		io.WriteString(c, "GET / HTTP/1.1\r\nHo")
		closedWithin(c, "a partial head", start)
	})
	t.Run("silent", func(t *testing.T) {
		c := f.dial()
		closedWithin(c, "a new connection with no head", time.Now())
	})
	t.Run("idle", func(t *testing.T) {
		c := f.dial()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		readResponse(t, br, "GET")
		start := time.Now()
		expectEOF(t, br)
		if d := time.Since(start); d > to+2*time.Second {
			t.Errorf("idle connection closed after %v", d)
		}
	})
	t.Run("in-flight", func(t *testing.T) {
		c := f.dial()
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(4 * to) // the exchange outlasts both timeouts
		slow <- struct{}{}
		if resp, body := readResponse(t, bufio.NewReader(c), "GET"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})
}

// TestShutdownInFlight: Shutdown lets the exchange in flight finish,
// closes the connection after it, and returns then.
func TestShutdownInFlight(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		io.WriteString(w, "finished")
	}))
	xs := make(chan *exchangeRec, 10)
	f := start(t, Config{Handler: denyPOST(xs)}, up.Listener.Addr().String(), false)
	idle := f.dial() // an idle connection alongside: closed at once
	c := f.dial()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived
	shut := make(chan error, 1)
	go func() { shut <- f.l.Shutdown(context.Background()) }()
	expectEOF(t, bufio.NewReader(idle))
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with an exchange in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	br := bufio.NewReader(c)
	if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "finished" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	expectEOF(t, br)
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Shutdown did not return")
	}
	if d := (<-xs).await(t); d.status != 200 || d.err != nil {
		t.Errorf("Done(%d, %v)", d.status, d.err)
	}
	// No new connection is taken.
	f.drainTakes()
	c2, err := net.Dial("tcp", f.addr)
	if err == nil {
		defer c2.Close()
		if err := <-f.takes; err == nil {
			t.Error("Take after Shutdown succeeded")
		}
	}
}

// TestShutdownIdle: idle connections are closed promptly and Shutdown
// returns.
func TestShutdownIdle(t *testing.T) {
	up := upstream(t, &echo{})
	f := start(t, Config{}, up.Listener.Addr().String(), false)
	var conns []*bufio.Reader
	for range 5 {
		c := f.dial()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		readResponse(t, br, "GET")
		conns = append(conns, br)
	}
	fresh := f.dial() // taken, nothing sent
	<-f.takes
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := f.l.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, br := range append(conns, bufio.NewReader(fresh)) {
		expectEOF(t, br)
	}
}

// TestClose: Close ends connections at once, exchanges in flight told
// ErrClosed, and a Take after it fails and closes its connection.
func TestClose(t *testing.T) {
	arrived := make(chan struct{})
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done()
	}))
	xs := make(chan *exchangeRec, 10)
	f := start(t, Config{Handler: denyPOST(xs)}, up.Listener.Addr().String(), false)
	c := f.dial()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived
	if err := f.l.Close(); err != nil {
		t.Fatal(err)
	}
	expectEOF(t, bufio.NewReader(c))
	if d := (<-xs).await(t); !errors.Is(d.err, ErrClosed) {
		t.Errorf("Done(%d, %v), want ErrClosed", d.status, d.err)
	}
	a, b := net.Pipe() // no descriptor: Take fails anyway
	defer b.Close()
	if err := f.l.Take(Plain(a), nil); err == nil {
		t.Error("Take of a net.Pipe succeeded")
	}
	f.drainTakes()
	c2 := f.dial()
	if err := <-f.takes; !errors.Is(err, ErrClosed) {
		t.Errorf("Take after Close: %v, want ErrClosed", err)
	}
	expectEOF(t, bufio.NewReader(c2))
}

// TestBackpressure: an answer far over maxQueued to a slow reader, and
// a request body as large to a slow upstream, arrive whole.
func TestBackpressure(t *testing.T) {
	const size = 8 * maxQueued
	big := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	want := sha256.Sum256(big)
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			h := sha256.New()
			buf := make([]byte, 64<<10)
			for {
				n, err := r.Body.Read(buf)
				h.Write(buf[:n])
				if err != nil {
					break
				}
				time.Sleep(time.Millisecond) // a slow reader
			}
			w.Write(h.Sum(nil))
			return
		}
		w.Write(big)
	}))
	f := start(t, Config{}, up.Listener.Addr().String(), false)
	c := f.dial()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		h.Write(buf[:n])
		if err != nil {
			if err != io.EOF {
				t.Fatalf("reading the answer: %v", err)
			}
			break
		}
		time.Sleep(200 * time.Microsecond) // a slow reader
	}
	if !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("the large answer did not arrive whole")
	}
	go func() {
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(big))
		c.Write(big)
	}()
	_, got := readResponse(t, br, "POST")
	if got != string(want[:]) {
		t.Fatal("the large request body did not arrive whole")
	}
}
