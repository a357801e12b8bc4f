//go:build linux

package loop

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// TestPoolTwoKeys: one caller's connection alternating between two
// upstreams reaches each in turn, over one connection to each (dialed
// once, then taken from the pool).
func TestPoolTwoKeys(t *testing.T) {
	a, b := newKeptServer(t, "a", nil), newKeptServer(t, "b", nil)
	ua, ub := &testUpstream{key: "a", addr: a.addr}, &testUpstream{key: "b", addr: b.addr}
	f := start(t, Config{Handler: byPath(map[byte]Upstream{'a': ua, 'b': ub}, Verdict{})}, "", false)
	c := f.caller()
	for i := range 3 {
		for _, p := range []string{"/a", "/b"} {
			status, body := c.get(p)
			if want := p[1:] + " 1 " + p; status != 200 || body != want {
				t.Fatalf("round %d %s: %d %q, want 200 %q", i, p, status, body, want)
			}
		}
	}
	if da, db := ua.dials.Load(), ub.dials.Load(); da != 1 || db != 1 {
		t.Errorf("dials: a %d, b %d; want 1 each", da, db)
	}
}

// TestPoolAcrossCallers: an upstream connection one caller's exchange
// used serves the next caller's request (Config.Dial's upstream, key "":
// the inbound sidecar's), and neither caller's connection holds it.
func TestPoolAcrossCallers(t *testing.T) {
	k := newKeptServer(t, "k", nil)
	var n int
	var mu sync.Mutex
	cfg := Config{Dial: func(ctx context.Context) (net.Conn, error) {
		mu.Lock()
		n++
		mu.Unlock()
		return dialTo(k.addr)(ctx)
	}}
	f := start(t, cfg, "", false)
	c1, c2 := f.caller(), f.caller()
	for i, c := range []*caller{c1, c2, c1, c2} {
		if status, body := c.get("/x"); status != 200 || body != "k 1 /x" {
			t.Fatalf("request %d: %d %q", i, status, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 1 || k.accepted() != 1 {
		t.Errorf("%d dials, %d connections; want 1", n, k.accepted())
	}
}

// TestPoolIdleUpstreamSends: an idle pooled connection that sends bytes
// is closed and reported (ReasonUnsolicited); one that hangs up is
// closed silently; either way the next request dials anew.
func TestPoolIdleUpstreamSends(t *testing.T) {
	k := newKeptServer(t, "k", nil)
	reasons := make(chan string, 10)
	f := start(t, Config{ProtocolError: func(r string) { reasons <- r }}, k.addr, false)
	c := f.caller()
	if status, _ := c.get("/1"); status != 200 {
		t.Fatal(status)
	}
	// Pooled, nobody asked: at once the next request, which must find
	// the bytes (whatever the order of the loop's events), not take them
	// for its answer.
	io.WriteString(k.conn(1), "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED")
	if status, body := c.get("/2"); status != 200 || body != "k 2 /2" {
		t.Fatalf("after the stray bytes: %d %q", status, body)
	}
	select {
	case r := <-reasons:
		if r != h1.ReasonUnsolicited {
			t.Errorf("reason %q, want %q", r, h1.ReasonUnsolicited)
		}
	case <-time.After(waitFor):
		t.Fatal("ProtocolError was not told")
	}
	if n := k.awaitClosed(t); n != 1 {
		t.Fatalf("connection %d closed, want 1", n)
	}
	k.conn(2).(*net.TCPConn).CloseWrite() // the upstream hangs up an idle connection
	if n := k.awaitClosed(t); n != 2 {
		t.Fatalf("connection %d closed, want 2", n)
	}
	if status, body := c.get("/3"); status != 200 || body != "k 3 /3" {
		t.Fatalf("after the hang-up: %d %q", status, body)
	}
	select {
	case r := <-reasons:
		t.Errorf("ProtocolError told %q for a hang-up", r)
	default:
	}
}

// TestPoolIdleTimeout: an idle connection unused for
// UpstreamIdleTimeout (on the loop's clock) is closed; the next request
// dials.
func TestPoolIdleTimeout(t *testing.T) {
	k := newKeptServer(t, "k", nil)
	clock := newFakeClock()
	f := start(t, Config{Now: clock.now, UpstreamIdleTimeout: time.Minute}, k.addr, false)
	c := f.caller()
	if status, _ := c.get("/1"); status != 200 {
		t.Fatal(status)
	}
	clock.add(59 * time.Second)
	if status, body := c.get("/2"); status != 200 || body != "k 1 /2" {
		t.Fatalf("within the idle timeout: %d %q", status, body)
	}
	k.noneClosed(t)
	clock.add(61 * time.Second)
	if n := k.awaitClosed(t); n != 1 { // the sweep: at most a second
		t.Fatalf("connection %d closed, want 1", n)
	}
	if status, body := c.get("/3"); status != 200 || body != "k 2 /3" {
		t.Fatalf("after the idle timeout: %d %q", status, body)
	}
}

// TestPoolMaxIdle: with MaxIdlePerUpstream 1, of two connections freed
// the one idle longer is closed, and the other serves the next request.
func TestPoolMaxIdle(t *testing.T) {
	holds := []chan struct{}{make(chan struct{}), make(chan struct{})}
	k := newKeptServer(t, "k", func(n int) {
		if n <= len(holds) {
			<-holds[n-1]
		}
	})
	f := start(t, Config{MaxIdlePerUpstream: 1}, k.addr, false)
	c1, c2 := f.caller(), f.caller()
	for _, c := range []*caller{c1, c2} {
		io.WriteString(c.c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
		<-k.got // both in flight: two connections
	}
	holds[0] <- struct{}{} // the first connection (c1's) is freed first
	first, _ := readResponse(t, c1.br, "GET")
	holds[1] <- struct{}{}
	second, _ := readResponse(t, c2.br, "GET")
	if first.StatusCode != 200 || second.StatusCode != 200 {
		t.Fatal(first.StatusCode, second.StatusCode)
	}
	if n := k.awaitClosed(t); n != 1 {
		t.Fatalf("connection %d closed, want 1 (idle longer)", n)
	}
	close(holds[1])
	if status, body := c1.get("/y"); status != 200 || body != "k 2 /y" {
		t.Fatalf("next request: %d %q", status, body)
	}
	if k.accepted() != 2 {
		t.Errorf("%d connections, want 2", k.accepted())
	}
}

// TestHandoffVerdict: a request the Handler hands off reaches
// Config.Handoff whole, from its head as received, with the body and a
// pipelined request the loop had read; the upstream never sees it.
// Without Config.Handoff the caller gets 501.
func TestHandoffVerdict(t *testing.T) {
	handler := handlerFunc(func(_ *Caller, h *h1.Head) Verdict {
		return Verdict{Handoff: string(h.Target) == "/hand"}
	})
	sent := "POST /hand HTTP/1.1\r\nHost: x\r\nX-Odd:  kept  \r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tlsCallers := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[tlsCallers], func(t *testing.T) {
			k := newKeptServer(t, "k", nil)
			handed := make(chan string, 1)
			f := start(t, Config{Handler: handler, Handoff: func(c net.Conn, _ any) {
				defer c.Close()
				b := make([]byte, len(sent))
				_, err := io.ReadFull(c, b)
				if err != nil {
					handed <- err.Error()
					return
				}
				handed <- string(b)
				io.WriteString(c, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
			}}, k.addr, tlsCallers)
			c := f.caller()
			if status, body := c.get("/first"); status != 200 || body != "k 1 /first" {
				t.Fatalf("first: %d %q", status, body)
			}
			io.WriteString(c.c, sent)
			select {
			case got := <-handed:
				if got != sent {
					t.Errorf("handed off %q, want %q", got, sent)
				}
			case <-time.After(waitFor):
				t.Fatal("not handed off")
			}
			if resp, _ := readResponse(t, c.br, "POST"); resp.StatusCode != 204 {
				t.Errorf("the hand-off's answer: %d", resp.StatusCode)
			}
			if p := <-k.got; p != "/first" {
				t.Errorf("the upstream got %s", p)
			}
			select {
			case p := <-k.got:
				t.Errorf("the upstream got %s too", p)
			default:
			}
		})
	}

	k := newKeptServer(t, "k", nil)
	g := start(t, Config{Handler: handler}, k.addr, false)
	c := g.caller()
	io.WriteString(c.c, sent)
	if resp, _ := readResponse(t, c.br, "POST"); resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("no Config.Handoff: %d, want 501", resp.StatusCode)
	}
	expectEOF(t, c.br)
}

// TestVerdictTimeout: an exchange past its Timeout before its answer
// began gets the caller TimeoutAnswer (or a 504) and its connection
// ends, the upstream's is closed, and Done is told ErrTimeout; once the
// answer began, both connections are cut.
func TestVerdictTimeout(t *testing.T) {
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall) })
	upClosed := make(chan bool, 10)
	addr := rawUpstream(t, func(c net.Conn) {
		defer func() { upClosed <- true }()
		defer c.Close()
		b := make([]byte, 4096)
		n, _ := c.Read(b)
		if strings.Contains(string(b[:n]), "/began") {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
		}
		go func() { <-stall; c.Close() }()
		io.Copy(io.Discard, c) // until the loop closes it
	})
	for _, tc := range []struct {
		path   string
		answer []byte
		status int
	}{
		{"/none", nil, 504},
		{"/none", []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"), 503},
		{"/began", nil, 200},
	} {
		x := newExchange()
		f := start(t, Config{Handler: handlerFunc(func(*Caller, *h1.Head) Verdict {
			return Verdict{Timeout: 50 * time.Millisecond, TimeoutAnswer: tc.answer, Exchange: x}
		})}, addr, false)
		c := f.caller()
		io.WriteString(c.c, "GET "+tc.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.path, resp.StatusCode, tc.status)
		}
		io.ReadAll(resp.Body)
		expectEOF(t, c.br)
		if d := x.await(t); d.status != tc.status || d.err != ErrTimeout {
			t.Errorf("%s: Done(%d, %v), want (%d, ErrTimeout)", tc.path, d.status, d.err, tc.status)
		}
		select {
		case <-upClosed:
		case <-time.After(waitFor):
			t.Fatalf("%s: the upstream connection was not closed", tc.path)
		}
	}
}

// retrier is an Exchange that sends its request to next when first
// cannot be reached.
type retrier struct {
	*exchangeRec
	next  Upstream
	asked chan Upstream
}

func (r *retrier) Unreachable(up Upstream, err error) Upstream {
	r.asked <- up
	if err == nil {
		return nil
	}
	next := r.next
	r.next = nil
	return next
}

// TestRetrier: an Exchange that is a Retrier, told its upstream refused
// the connection, names a second one, which gets the request; a Retrier
// that gives up gets the caller Verdict.Unreachable.
func TestRetrier(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	k := newKeptServer(t, "k", nil)
	down, good := &testUpstream{key: "down", addr: refused}, &testUpstream{key: "good", addr: k.addr}
	r := &retrier{exchangeRec: newExchange(), asked: make(chan Upstream, 4), next: good}
	unreachable := []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ngone")
	f := start(t, Config{Handler: handlerFunc(func(*Caller, *h1.Head) Verdict {
		return Verdict{Upstream: down, Exchange: r, Unreachable: unreachable}
	})}, "", false)
	c := f.caller()
	if status, body := c.get("/x"); status != 200 || body != "k 1 /x" {
		t.Fatalf("retried: %d %q", status, body)
	}
	if up := <-r.asked; up != down {
		t.Errorf("asked about %v, want the refusing upstream", up)
	}
	if d := r.await(t); d.status != 200 || d.err != nil {
		t.Errorf("Done(%d, %v)", d.status, d.err)
	}
	status, body := c.get("/y") // r.next is nil now: it gives up
	if status != 503 || body != "gone" {
		t.Errorf("given up: %d %q, want Verdict.Unreachable", status, body)
	}
	if d := r.await(t); d.status != 503 || d.err == nil {
		t.Errorf("given up: Done(%d, %v)", d.status, d.err)
	}
	expectEOF(t, c.br)
}

// TestUpstreamNotAfter: a connection whose Dial said notAfter carries
// no request from then on: the next one dials anew.
func TestUpstreamNotAfter(t *testing.T) {
	k := newKeptServer(t, "k", nil)
	clock := newFakeClock()
	u := &testUpstream{key: "k", addr: k.addr, notAfter: clock.now().Add(time.Minute)}
	f := start(t, Config{Now: clock.now, Handler: byPath(map[byte]Upstream{'x': u}, Verdict{})}, "", false)
	c := f.caller()
	for i, want := range []string{"k 1 /x", "k 1 /x"} {
		if status, body := c.get("/x"); status != 200 || body != want {
			t.Fatalf("request %d: %d %q, want %q", i, status, body, want)
		}
	}
	clock.add(2 * time.Minute)
	u.mu.Lock()
	u.notAfter = time.Time{}
	u.mu.Unlock()
	if status, body := c.get("/x"); status != 200 || body != "k 2 /x" {
		t.Fatalf("past notAfter: %d %q, want a new connection", status, body)
	}
	if n := k.awaitClosed(t); n != 1 {
		t.Errorf("connection %d closed, want 1", n)
	}
}

// TestShutdownClosesPool: Shutdown closes idle pooled connections at
// once and returns; so does Close.
func TestShutdownClosesPool(t *testing.T) {
	for _, shutdown := range []bool{true, false} {
		k := newKeptServer(t, "k", nil)
		f := start(t, Config{}, k.addr, false)
		c := f.caller()
		if status, _ := c.get("/x"); status != 200 {
			t.Fatal(status)
		}
		if shutdown {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			if err := f.l.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			cancel()
		} else {
			f.l.Close()
		}
		if n := k.awaitClosed(t); n != 1 {
			t.Errorf("shutdown %v: connection %d closed, want 1", shutdown, n)
		}
		expectEOF(t, c.br)
	}
}

// TestPoolEarlyAnswer: a connection whose upstream answered before the
// request's body was all relayed is not reused: the rest of the body is
// dropped, the connection closed, and the next request dials anew.
func TestPoolEarlyAnswer(t *testing.T) {
	k := newKeptServer(t, "k", nil)
	addr := firstThen(t, k, func(c net.Conn) {
		b := make([]byte, 4096)
		c.Read(b) // the head and part of the body
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
		io.Copy(io.Discard, c)
	})
	f := start(t, Config{}, addr, false)
	c := f.caller()
	io.WriteString(c.c, "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
	if resp, _ := readResponse(t, c.br, "POST"); resp.StatusCode != 413 {
		t.Fatalf("early answer: %d", resp.StatusCode)
	}
	io.WriteString(c.c, "world")
	if status, body := c.get("/next"); status != 200 || body != "k 1 /next" {
		t.Fatalf("next: %d %q, want a new connection", status, body)
	}
}

// firstThen is an upstream that serves its first connection with
// first (and closes it), and relays the others to k.
func firstThen(t *testing.T, k *keptServer, first func(c net.Conn)) string {
	var seen atomic.Int32
	return rawUpstream(t, func(c net.Conn) {
		if seen.Add(1) > 1 {
			proxyTo(c, k.addr)
			return
		}
		defer c.Close()
		first(c)
	})
}

// proxyTo relays c to addr both ways until either ends.
func proxyTo(c net.Conn, addr string) {
	defer c.Close()
	u, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer u.Close()
	go io.Copy(u, c)
	io.Copy(c, u)
}

// TestPoolReplay: a request that finds its pooled connection (another
// caller's before) closed by the upstream before any answer goes once
// more, on a new connection.
func TestPoolReplay(t *testing.T) {
	var conns sync.WaitGroup
	addr := rawUpstream(t, func(c net.Conn) {
		conns.Add(1)
		defer conns.Done()
		defer c.Close()
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil || i == 1 {
				return // the second request on a connection: closed unanswered
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	f := start(t, Config{}, addr, false)
	c1, c2 := f.caller(), f.caller()
	if status, _ := c1.get("/1"); status != 200 {
		t.Fatal(status)
	}
	if status, body := c2.get("/2"); status != 200 || body != "ok" {
		t.Fatalf("replayed: %d %q", status, body)
	}
}

// TestPoolConnectionClose: Verdict.Close, or the caller's Connection:
// close, ends the caller's connection, not the upstream's, which serves
// the next caller (the field is hop-by-hop: the upstream never saw it);
// a head the Handler made that says Connection: close does not leave its
// upstream connection in the pool.
func TestPoolConnectionClose(t *testing.T) {
	k := newKeptServer(t, "k", nil)
	f := start(t, Config{Handler: handlerFunc(func(_ *Caller, h *h1.Head) Verdict {
		switch string(h.Target) {
		case "/bye":
			return Verdict{Close: true}
		case "/hop":
			return Verdict{Head: []byte("GET /hop HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n")}
		}
		return Verdict{}
	})}, k.addr, false)
	c := f.caller()
	if status, body := c.get("/bye"); status != 200 || body != "k 1 /bye" {
		t.Fatalf("Verdict.Close: %d %q", status, body)
	}
	expectEOF(t, c.br)
	c = f.caller()
	io.WriteString(c.c, "GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp, body := readResponse(t, c.br, "GET"); resp.StatusCode != 200 || body != "k 1 /close" {
		t.Fatalf("Connection: close: %d %q, want the pooled connection", resp.StatusCode, body)
	}
	expectEOF(t, c.br)
	c = f.caller()
	if status, body := c.get("/hop"); status != 200 || body != "k 1 /hop" {
		t.Fatalf("the Handler's close: %d %q", status, body)
	}
	if n := k.awaitClosed(t); n != 1 {
		t.Fatalf("connection %d closed, want 1", n)
	}
	if status, body := c.get("/next"); status != 200 || body != "k 2 /next" {
		t.Fatalf("next: %d %q, want a new connection", status, body)
	}
}

// TestSaysClose: the close option of a Connection field, in any case,
// among others.
func TestSaysClose(t *testing.T) {
	for head, want := range map[string]bool{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n":                         false,
		"GET / HTTP/1.1\r\nConnection: close\r\n\r\n":               true,
		"GET / HTTP/1.1\r\nconnection:keep-alive ,  CLOSE \r\n\r\n": true,
		"GET / HTTP/1.1\r\nX-Connection: close\r\n\r\n":             false,
		"GET / HTTP/1.1\r\nConnection: closed\r\nX: close\r\n\r\n":  false,
	} {
		if got := saysClose([]byte(head)); got != want {
			t.Errorf("%q: %v, want %v", head, got, want)
		}
	}
}

// TestBytesAfterAnswerPipelined: bytes after an answer, in the same
// read, close its connection (reported); the request pipelined behind
// goes on a new one, its answer never read from those bytes.
func TestBytesAfterAnswerPipelined(t *testing.T) {
	k := newKeptServer(t, "k", nil)
	addr := firstThen(t, k, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED")
		io.Copy(io.Discard, br)
	})
	reasons := make(chan string, 10)
	f := start(t, Config{ProtocolError: func(r string) { reasons <- r }}, addr, false)
	c := f.caller()
	io.WriteString(c.c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResponse(t, c.br, "GET"); resp.StatusCode != 200 || body != "first" {
		t.Fatalf("first: %d %q", resp.StatusCode, body)
	}
	if resp, body := readResponse(t, c.br, "GET"); resp.StatusCode != 200 || body != "k 1 /2" {
		t.Fatalf("pipelined: %d %q, want it from a new connection", resp.StatusCode, body)
	}
	if r := <-reasons; r != h1.ReasonBytesAfterResponse {
		t.Errorf("reason %q, want %q", r, h1.ReasonBytesAfterResponse)
	}
}
