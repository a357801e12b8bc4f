//go:build linux

package loop

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// panicky is an Upstream whose Key or Dial panics.
type panicky struct{ inKey bool }

func (p panicky) Key() string {
	if p.inKey {
		panic("Key")
	}
	return "panicky"
}

func (panicky) Dial(context.Context) (net.Conn, *tls.Config, time.Time, error) { panic("Dial") }

// TestUpstreamPanics: an Upstream whose Key panics fails its caller's
// connection only; one whose Dial panics is unreachable (502); the loop
// serves on.
func TestUpstreamPanics(t *testing.T) {
	k := newKeptServer(t, "k", nil)
	f := start(t, Config{Handler: handlerFunc(func(_ *Caller, h *h1.Head) Verdict {
		switch string(h.Target) {
		case "/key":
			return Verdict{Upstream: panicky{inKey: true}}
		case "/dial":
			return Verdict{Upstream: panicky{}}
		}
		return Verdict{}
	})}, k.addr, false)
	c := f.caller()
	c.c.Write([]byte("GET /key HTTP/1.1\r\nHost: x\r\n\r\n"))
	expectEOF(t, c.br)
	c = f.caller()
	if status, _ := c.get("/dial"); status != http.StatusBadGateway {
		t.Errorf("Dial panicked: %d, want 502", status)
	}
	if status, body := f.caller().get("/ok"); status != 200 || body != "k 1 /ok" {
		t.Errorf("after: %d %q", status, body)
	}
}

// TestNoDial: with no Config.Dial, a request whose Verdict names no
// Upstream gets BadGateway.
func TestNoDial(t *testing.T) {
	f := start(t, Config{Handler: handlerFunc(func(*Caller, *h1.Head) Verdict { return Verdict{} })}, "", false)
	c := f.caller()
	if status, _ := c.get("/x"); status != http.StatusBadGateway {
		t.Errorf("%d, want 502", status)
	}
	expectEOF(t, c.br)
}

// wrappedConn is a connection as a capped dialer returns it: a wrapper
// whose Close frees a slot (upstream.Conns' limitedConn), with the TCP
// connection under it.
type wrappedConn struct {
	net.Conn
	closed chan struct{}
	once   sync.Once
}

func (c *wrappedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func (c *wrappedConn) NetConn() net.Conn { return c.Conn }

// wrappingUpstream dials addr and wraps each connection, keeping the
// wrappers.
type wrappingUpstream struct {
	addr  string
	mu    sync.Mutex
	conns []*wrappedConn
}

func (u *wrappingUpstream) Key() string { return "wrapped" }

// conn is the wrapper of u's dial number n (from 0).
func (u *wrappingUpstream) conn(n int) *wrappedConn {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.conns[n]
}

func (u *wrappingUpstream) Dial(ctx context.Context) (net.Conn, *tls.Config, time.Time, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", u.addr)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	w := &wrappedConn{Conn: c, closed: make(chan struct{})}
	u.mu.Lock()
	u.conns = append(u.conns, w)
	u.mu.Unlock()
	return w, nil, time.Time{}, nil
}

// TestUpstreamDialedConnClosed: the loop closes the connection an
// Upstream's Dial returned (the wrapper, not only the socket it took
// from under it) whenever it closes that upstream connection: when the
// upstream hangs up, when an idle one times out in the pool, and at
// Close. A dialer's cap on connections per destination frees its slot
// only then.
func TestUpstreamDialedConnClosed(t *testing.T) {
	awaitClosed := func(t *testing.T, w *wrappedConn, what string) {
		t.Helper()
		select {
		case <-w.closed:
		case <-time.After(waitFor):
			t.Fatalf("%s: the dialed connection's wrapper was never closed", what)
		}
	}
	k := newKeptServer(t, "k", nil)
	clock := newFakeClock()
	u := &wrappingUpstream{addr: k.addr}
	f := start(t, Config{Now: clock.now, UpstreamIdleTimeout: time.Minute, Handler: byPath(map[byte]Upstream{'a': u}, Verdict{})}, "", false)
	c := f.caller()
	if status, _ := c.get("/a1"); status != 200 {
		t.Fatal(status)
	}
	// The upstream ends its idle connection: the loop closes its side.
	k.conn(1).Close()
	awaitClosed(t, u.conn(0), "upstream hang-up")
	if status, _ := c.get("/a2"); status != 200 {
		t.Fatal(status)
	}
	// Idle in the pool past its timeout.
	clock.add(2 * time.Minute)
	awaitClosed(t, u.conn(1), "idle timeout")
	if status, _ := c.get("/a3"); status != 200 {
		t.Fatal(status)
	}
	f.l.Close()
	awaitClosed(t, u.conn(2), "Close")
}

// TestPlainWithBuffered: a connection taken with bytes a sniff read
// already (PlainWith) is served from them first: a whole request in
// them is answered at once, and one that began in them ends in the
// socket's bytes.
func TestPlainWithBuffered(t *testing.T) {
	k := newKeptServer(t, "k", nil)
	l, err := New(Config{Dial: dialTo(k.addr)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	first := "GET /whole HTTP/1.1\r\nHost: x\r\n\r\nGET /split HTTP/1.1\r\nHo"
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		br := bufio.NewReader(c)
		if _, err := br.Peek(len(first)); err != nil { // the sniff
			c.Close()
			return
		}
		buffered, _ := br.Peek(br.Buffered())
		if err := l.Take(PlainWith(c, buffered), nil); err != nil {
			t.Error(err)
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	io.WriteString(c, first)
	if _, body := readResponse(t, br, "GET"); body != "k 1 /whole" {
		t.Fatalf("first answer %q", body)
	}
	io.WriteString(c, "st: x\r\n\r\n")
	if _, body := readResponse(t, br, "GET"); body != "k 1 /split" {
		t.Fatalf("second answer %q", body)
	}
}

// TestCallerRemoteAddr: a Handler finds the caller's address in
// Caller.RemoteAddr (a consistent hash by source IP reads it).
func TestCallerRemoteAddr(t *testing.T) {
	got := make(chan string, 1)
	k := newKeptServer(t, "k", nil)
	f := start(t, Config{Handler: handlerFunc(func(c *Caller, _ *h1.Head) Verdict {
		got <- c.RemoteAddr
		return Verdict{}
	})}, k.addr, false)
	c := f.caller()
	if status, _ := c.get("/a"); status != 200 {
		t.Fatal(status)
	}
	if addr := <-got; addr != c.c.LocalAddr().String() {
		t.Fatalf("Caller.RemoteAddr %q, want %q", addr, c.c.LocalAddr())
	}
}

// TestCloseIdle: CloseIdle closes the pool's idle connections at once,
// and the next request dials anew.
func TestCloseIdle(t *testing.T) {
	k := newKeptServer(t, "k", nil)
	f := start(t, Config{}, k.addr, false)
	c := f.caller()
	if status, _ := c.get("/1"); status != 200 {
		t.Fatal(status)
	}
	f.l.CloseIdle()
	if n := k.awaitClosed(t); n != 1 {
		t.Fatalf("connection %d closed, want 1", n)
	}
	if status, body := c.get("/2"); status != 200 || body != "k 2 /2" {
		t.Fatalf("after CloseIdle: %d %q", status, body)
	}
}
