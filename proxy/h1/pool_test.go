package h1

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPooledConnectionPoisoning: bytes an upstream sends past the end of a
// response — with it or later, while the connection is idle — are never
// read as the answer to the next request.
func TestPooledConnectionPoisoning(t *testing.T) {
	const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
	for _, tc := range []struct {
		name, method, first string
		late                bool // the extra bytes come after the response, while idle
		reason              string
	}{
		{"204 with a body", "GET", "HTTP/1.1 204 No Content\r\n\r\n" + smuggled, false, ReasonBytesAfterResponse},
		{"304 with a body", "GET", "HTTP/1.1 304 Not Modified\r\n\r\n" + smuggled, false, ReasonBytesAfterResponse},
		{"HEAD with a body", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n" + smuggled, false, ReasonBytesAfterResponse},
		{"past Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + smuggled, false, ReasonBytesAfterResponse},
		{"past the last chunk", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + smuggled, false, ReasonBytesAfterResponse},
		{"late, while idle", "GET", "HTTP/1.1 204 No Content\r\n\r\n", true, ReasonUnsolicited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idle := make(chan struct{})
			addr, _ := rawServer(t, func(c net.Conn, br *bufio.Reader) {
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if req.URL.Path != "/first" {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhonest")
						continue
					}
					io.WriteString(c, tc.first)
					if tc.late {
						<-idle
						io.WriteString(c, smuggled)
					}
				}
			})
			var mu sync.Mutex
			var reasons []string
			cl, dials := rawClient(addr, &reasons, &mu)
			defer cl.CloseIdle(true)
			resp, _ := get(t, cl, tc.method, "/first", nil)
			if tc.late {
				close(idle)
				// Await the bytes on the idle connection.
				waitFor(t, func() bool {
					cl.mu.Lock()
					defer cl.mu.Unlock()
					return len(cl.idle) == 1 && cl.idle[0].idle.check() == idleData
				})
			}
			_ = resp
			for range 2 {
				if _, body := get(t, cl, "GET", "/second", nil); body != "honest" {
					t.Errorf("the next request got %q, want its own answer", body)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if dials.Load() != 2 || len(reasons) != 1 || reasons[0] != tc.reason {
				t.Errorf("%d dials, protocol errors %v; want 2 and [%s]", dials.Load(), reasons, tc.reason)
			}
		})
	}
}

// TestStalePooledConnection: a request on a connection the server closed
// while idle goes on a new one, whatever its method; one the server may
// have processed (it read the request, then closed) is sent again only if
// idempotent.
func TestStalePooledConnection(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	closeAfterRead := false
	addr, _ := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for n := 0; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(req.Body)
			mu.Lock()
			seen = append(seen, req.Method+" "+string(b))
			keep := closeAfterRead
			mu.Unlock()
			if keep && n > 0 {
				return // read it, then died: it may have been processed
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if !keep {
				return // keep-alive timeout at once: the connection idles closed
			}
		}
	})
	var reasons []string
	cl, dials := rawClient(addr, &reasons, &mu)
	defer cl.CloseIdle(true)
	get(t, cl, "GET", "/", nil)
	waitFor(t, func() bool {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return len(cl.idle) == 1 && cl.idle[0].idle.check() == idleClosed
	})
	if _, body := get(t, cl, "POST", "/", strings.NewReader("once")); body != "ok" || dials.Load() != 2 {
		t.Errorf("POST after an idle close: %q over %d dials, want ok over 2", body, dials.Load())
	}

	mu.Lock()
	closeAfterRead, seen = true, nil
	mu.Unlock()
	cl.CloseIdle(false)
	get(t, cl, "GET", "/", nil)
	req, _ := http.NewRequest("POST", "http://svc/", strings.NewReader("pay"))
	if _, err := cl.RoundTrip(req); !errors.Is(err, errClosedIdle) {
		t.Errorf("POST the server read then dropped: %v, want errClosedIdle and no resend", err)
	}
	get(t, cl, "GET", "/", nil)
	req, _ = http.NewRequest("GET", "http://svc/again", nil)
	if resp, err := cl.RoundTrip(req); err != nil {
		t.Errorf("GET the server read then dropped: %v, want it sent again", err)
	} else {
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(strings.Join(seen, "|"), "POST pay"); n != 1 {
		t.Errorf("the server saw %v: the POST %d times, want once", seen, n)
	}
}

// TestEarlyResponse: an answer that comes before a large body is sent is
// delivered (the rest of the body is not), on a connection then closed;
// the next request works.
func TestEarlyResponse(t *testing.T) {
	var read sync.Map
	_, cl, dials := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/deny":
			http.Error(w, "denied", http.StatusForbidden)
		case "/small":
			b, _ := io.ReadAll(r.Body)
			read.Store("small", len(b))
			io.WriteString(w, "ok")
		}
	}))
	for _, size := range []int{2 << 20, 8 << 20} {
		req, _ := http.NewRequest("POST", "http://svc/deny", io.LimitReader(zeros{}, int64(size)))
		req.ContentLength = int64(size)
		resp, err := cl.RoundTrip(req)
		if err != nil {
			t.Fatalf("%d bytes: %v, want the 403", size, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%d bytes: %d, want 403", size, resp.StatusCode)
		}
		// Chunked, of unknown length.
		req, _ = http.NewRequest("POST", "http://svc/deny", io.LimitReader(zeros{}, int64(size)))
		req.ContentLength = -1
		if resp, err = cl.RoundTrip(req); err != nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%d bytes chunked: %v %v, want the 403", size, resp, err)
		}
		resp.Body.Close()
	}
	before := dials.Load()
	if _, body := get(t, cl, "POST", "/small", strings.NewReader("next")); body != "ok" {
		t.Errorf("after early answers: %q", body)
	}
	if dials.Load() != before+1 {
		t.Errorf("a connection with an early answer was reused")
	}
	// A large body read to its end before the answer keeps the connection.
	for range 3 {
		req, _ := http.NewRequest("POST", "http://svc/small", io.LimitReader(zeros{}, 1<<20))
		req.ContentLength = 1 << 20
		resp, err := cl.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n, _ := read.Load("small"); n != 1<<20 || dials.Load() != before+1 {
		t.Errorf("large bodies read in full: %v bytes, %d new connections; want 1 MiB over the one kept", n, dials.Load()-before)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// wrapped is a connection wrapper of the kind the sidecar puts between
// TLS and the socket (a connection cap's slot).
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// The idle check reaches the socket through TLS and wrappers: bytes that
// arrive on an idle connection are seen whatever wraps it (a wrapper
// without a way down had turned the check off for every sidecar-to-sidecar
// connection).
func TestPooledConnectionPoisoningSeenThroughWrappers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer := <-accepted
	defer peer.Close()
	p := newIdlePeek(wrapped{wrapped{c}})
	if got := p.check(); got != idleQuiet {
		t.Fatalf("quiet connection: state %d, want idleQuiet", got)
	}
	peer.Write([]byte("HTTP/1.1 200 OK\r\n\r\n"))
	deadline := time.Now().Add(5 * time.Second)
	for p.check() != idleData {
		if time.Now().After(deadline) {
			t.Fatal("stray bytes never seen through the wrappers")
		}
		time.Sleep(time.Millisecond)
	}
}
