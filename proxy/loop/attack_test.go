//go:build linux

package loop

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// TestDialRacesHangUp: a caller that hangs up while its upstream is
// dialed: the dialed connection is closed when the dial ends, and the
// exchange is told once.
func TestDialRacesHangUp(t *testing.T) {
	up := upstream(t, &echo{})
	release := make(chan struct{})
	dialed := make(chan struct{}, 10)
	cfg := Config{Dial: func(ctx context.Context) (net.Conn, error) {
		<-release
		c, err := dialTo(up.Listener.Addr().String())(ctx)
		dialed <- struct{}{}
		return c, err
	}}
	xs := make(chan *exchangeRec, 10)
	cfg.Handler = denyPOST(xs)
	f := start(t, cfg, "", false)
	before := openFDs(t)
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	x := <-xs
	c.Close()
	if d := x.await(t); !errors.Is(d.err, ErrHungUp) {
		t.Errorf("Done(%d, %v), want ErrHungUp", d.status, d.err)
	}
	close(release)
	<-dialed
	settle(t, "descriptors back to their number", func() bool { return openFDs(t) <= before })
	f.l.Close()
	if n := x.count(); n != 1 {
		t.Errorf("Done called %d times", n)
	}
}

// TestMalformed: a request the loop cannot read is answered with the
// status proxy/h1 gives and the connection closed, nothing forwarded; a
// malformed body after a forwarded head closes the connection.
func TestMalformed(t *testing.T) {
	e := &echo{}
	up := upstream(t, e)
	f := start(t, Config{}, up.Listener.Addr().String(), false)
	for _, tc := range []struct {
		req    string
		status int // 0: closed, maybe after a forwarded head's answer
	}{
		{"GET / HTTP/1.0\r\nHost: x\r\n\r\n", 501},
		{"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 501},
		{"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", 501},
		{"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\n\r\n", 400},
		{"GET / HTTP/1.1\nHost: x\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: x\r\n Folded: y\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: x\r\nExpect: nothing\r\n\r\n", 417},
		{"GET / HTTP/1.1\r\nHost: x\r\nBig: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", 431},
		{"GET /" + strings.Repeat("a", 70<<10), 431},
		{"POST /bad-chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0},
		{"POST /bad-ext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;\x01\r\nabc\r\n0\r\n\r\n", 0},
		{"POST /no-crlf HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 0},
		{"POST /bad-trailer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", 0},
		{"POST /long-size HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("0", 5000), 0},
	} {
		c := f.dial()
		go io.WriteString(c, tc.req)
		br := bufio.NewReader(c)
		if tc.status != 0 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("%.60q: %v", tc.req, err)
			}
			io.ReadAll(resp.Body) // read until close
			if resp.StatusCode != tc.status {
				t.Errorf("%.60q: %d, want %d", tc.req, resp.StatusCode, tc.status)
			}
		} else {
			io.Copy(io.Discard, br) // the upstream may have answered the head already
		}
		expectEOF(t, br)
	}
	for _, r := range e.requests() {
		if !strings.HasPrefix(r, "POST /") {
			t.Errorf("upstream saw %q", r)
		}
	}
}

// TestMalformedUpstream: an upstream's malformed or unrequested answer
// ends the pair, the exchange told.
func TestMalformedUpstream(t *testing.T) {
	for _, answer := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nread until close",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
		"garbage\r\n\r\n",
	} {
		addr := rawUpstream(t, func(c net.Conn) {
			defer c.Close()
			http.ReadRequest(bufio.NewReader(c))
			io.WriteString(c, answer)
			io.Copy(io.Discard, c)
		})
		xs := make(chan *exchangeRec, 10)
		f := start(t, Config{Handler: denyPOST(xs)}, addr, false)
		c := f.dial()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		x := <-xs
		io.Copy(io.Discard, c)
		d := x.await(t)
		if strings.HasPrefix(answer, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab") {
			continue // the first answer was whole (Done nil); the second had no request
		}
		if d.err == nil {
			t.Errorf("%.40q: Done(%d, nil), want an error", answer, d.status)
		}
		f.l.Close()
		if n := x.count(); n != 1 {
			t.Errorf("Done called %d times", n)
		}
	}
}

// TestNoLeaks: a loop that served plain and TLS callers, answered,
// forwarded, failed to dial and was closed with connections open leaves
// no descriptor and no goroutine behind.
func TestNoLeaks(t *testing.T) {
	fdsBefore, gBefore := openFDs(t), numGoroutines()
	func() {
		e := &echo{}
		up := upstream(t, e)
		for _, tlsCallers := range []bool{false, true} {
			xs := make(chan *exchangeRec, 100)
			f := start(t, Config{Handler: denyPOST(xs), HeaderTimeout: time.Second, IdleTimeout: time.Second}, up.Listener.Addr().String(), tlsCallers)
			cl := f.client()
			for _, path := range []string{"/a", "/deny", "/b"} {
				resp, err := cl.Post(f.url(path), "text/plain", strings.NewReader("body"))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			open := f.dial() // left open: Close ends it
			io.WriteString(open, "GET /open HTTP/1.1\r\nHost: x\r\n\r\n")
			readResponse(t, bufio.NewReader(open), "GET")
			cl.Transport.(*http.Transport).CloseIdleConnections()
			f.ln.Close()
			f.wg.Wait()
			f.l.Close()
			open.Close()
		}
		bad, err := New(Config{Dial: func(context.Context) (net.Conn, error) { return nil, errors.New("down") }})
		if err != nil {
			t.Fatal(err)
		}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		c, _ := net.Dial("tcp", ln.Addr().String())
		s, _ := ln.Accept()
		if err := bad.Take(Plain(s), nil); err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetDeadline(time.Now().Add(waitFor))
		io.Copy(io.Discard, c)
		c.Close()
		bad.Close()
		up.Close()
		up.Client().Transport.(*http.Transport).CloseIdleConnections()
	}()
	settle(t, "descriptors as before", func() bool { return openFDs(t) <= fdsBefore })
	settle(t, "goroutines as before", func() bool { return numGoroutines() <= gBefore })
}

func numGoroutines() int { return runtime.NumGoroutine() }

// TestStress: many callers at once, every verdict and hang-ups mid-way;
// after Close every exchange was told exactly once.
func TestStress(t *testing.T) {
	up := upstream(t, &echo{})
	var mu sync.Mutex
	var all []*exchangeRec
	h := handlerFunc(func(c *Caller, h *h1.Head) Verdict {
		x := newExchange()
		x.ch = make(chan done, 10)
		mu.Lock()
		all = append(all, x)
		mu.Unlock()
		v := Verdict{Exchange: x}
		switch string(h.Target) {
		case "/deny":
			v.Answer = []byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
		case "/close":
			v.Close = true
		}
		return v
	})
	f := start(t, Config{Handler: h}, up.Listener.Addr().String(), false)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", f.addr)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(waitFor))
			var b strings.Builder
			for j := range 5 {
				path := []string{"/ok", "/deny", "/close", "/ok"}[(i+j)%4]
				fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n", path)
			}
			req := b.String()
			if i%3 == 0 {
				req = req[:len(req)*(i%7+1)/8] // hang up mid-way
			}
			io.WriteString(c, req)
			if i%3 != 0 {
				io.Copy(io.Discard, c)
			}
		}()
	}
	wg.Wait()
	f.l.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(all) == 0 {
		t.Fatal("no request reached the Handler")
	}
	for i, x := range all {
		if n := x.count(); n != 1 {
			t.Errorf("exchange %d: Done called %d times", i, n)
		}
	}
}
