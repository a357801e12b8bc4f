//go:build linux

package loop

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// keptServer is an upstream that keeps its connections alive: it
// answers "<name> <conn#> <path>" to each request (once hold, if not
// nil, returns for its connection's number), and reports each
// connection it sees end.
type keptServer struct {
	name   string
	addr   string
	hold   func(conn int)
	mu     sync.Mutex
	conns  []net.Conn
	closed chan int // the number (from 1) of each connection that ended
	got    chan string
}

func newKeptServer(t *testing.T, name string, hold func(conn int)) *keptServer {
	k := &keptServer{name: name, hold: hold, closed: make(chan int, 100), got: make(chan string, 100)}
	k.addr = rawUpstream(t, func(c net.Conn) {
		k.mu.Lock()
		k.conns = append(k.conns, c)
		n := len(k.conns)
		k.mu.Unlock()
		defer func() { k.closed <- n }()
		eachRequest(c, func(req *http.Request) bool {
			io.Copy(io.Discard, req.Body)
			k.got <- req.URL.Path
			if k.hold != nil {
				k.hold(n)
			}
			body := fmt.Sprintf("%s %d %s", k.name, n, req.URL.Path)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			return true
		})
	})
	return k
}

// eachRequest reads the requests on c and has serve answer each, until
// one cannot be read or serve returns false; then it closes c.
func eachRequest(c net.Conn, serve func(req *http.Request) bool) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil || !serve(req) {
			return
		}
	}
}

// accepted is how many connections k has seen.
func (k *keptServer) accepted() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.conns)
}

// conn is k's connection number n (from 1).
func (k *keptServer) conn(n int) net.Conn {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.conns[n-1]
}

// awaitClosed returns the number of the next connection of k to end.
func (k *keptServer) awaitClosed(t testing.TB) int {
	t.Helper()
	select {
	case n := <-k.closed:
		return n
	case <-time.After(waitFor):
		t.Fatalf("%s: no connection ended", k.name)
	}
	return 0
}

// noneClosed fails if a connection of k ended.
func (k *keptServer) noneClosed(t testing.TB) {
	t.Helper()
	select {
	case n := <-k.closed:
		t.Fatalf("%s: connection %d ended", k.name, n)
	default:
	}
}

// testUpstream is an Upstream dialing addr, counting its dials.
type testUpstream struct {
	key, addr string
	tls       *tls.Config
	dials     atomic.Int32
	mu        sync.Mutex
	notAfter  time.Time
}

func (u *testUpstream) Key() string { return u.key }

func (u *testUpstream) Dial(ctx context.Context) (net.Conn, *tls.Config, time.Time, error) {
	u.dials.Add(1)
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", u.addr)
	u.mu.Lock()
	defer u.mu.Unlock()
	return c, u.tls, u.notAfter, err
}

// fakeClock is a Config.Now a test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// caller is a raw connection to f that sends requests and reads their
// answers one at a time.
type caller struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func (f *fixture) caller() *caller {
	c := f.dial()
	return &caller{t: f.t, c: c, br: bufio.NewReader(c)}
}

// get sends a GET for path and returns the answer's status and body.
func (c *caller) get(path string) (int, string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		c.t.Fatal(err)
	}
	resp, body := readResponse(c.t, c.br, "GET")
	return resp.StatusCode, body
}

// byPath is a Handler sending each request to ups[its path's first
// letter after the slash], with v's other fields.
func byPath(ups map[byte]Upstream, v Verdict) Handler {
	return handlerFunc(func(_ *Caller, h *h1.Head) Verdict {
		v := v
		if len(h.Target) > 1 {
			v.Upstream = ups[h.Target[1]]
		}
		return v
	})
}
