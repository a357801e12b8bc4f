package h1

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
)

// deadlineConn counts the deadline changes made on a connection.
type deadlineConn struct {
	net.Conn
	n *atomic.Int64
}

func (c deadlineConn) SetDeadline(t time.Time) error {
	c.n.Add(1)
	return c.Conn.SetDeadline(t)
}

func (c deadlineConn) SetReadDeadline(t time.Time) error {
	c.n.Add(1)
	return c.Conn.SetReadDeadline(t)
}

func (c deadlineConn) SetWriteDeadline(t time.Time) error {
	c.n.Add(1)
	return c.Conn.SetWriteDeadline(t)
}

// A keep-alive request whose head comes whole costs the server one
// deadline change (the idle timeout), and the client none when the
// request's context has no deadline; each is a runtime timer operation.
// Before session 26 the server made three per request (idle, header,
// cleared) and the client one (cleared, though nothing was set).
func TestRequestPathDeadlineOps(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var server, client atomic.Int64
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.Serve(context.Background(), deadlineConn{Conn: c, n: &server})
	}()
	cl := &Client{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		return deadlineConn{Conn: c, n: &client}, nil
	}}
	const requests = 20
	for range requests {
		if _, b := get(t, cl, http.MethodGet, "/", nil); b != "ok" {
			t.Fatalf("body %q", b)
		}
	}
	// The last request's idle deadline may not be set yet.
	time.Sleep(20 * time.Millisecond)
	if n := server.Load(); n > requests+1 {
		t.Errorf("server: %d deadline changes for %d requests, want at most %d", n, requests, requests+1)
	}
	if n := client.Load(); n != 0 {
		t.Errorf("client: %d deadline changes for %d requests without a deadline, want 0", n, requests)
	}
	cl.CloseIdle(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Shutdown(ctx)
	wg.Wait()
}

// The deadlines left pending still apply as if set at once: a head that
// stalls past the header timeout ends the connection, a body that comes
// after both the header and the idle timeout is read whole, and an idle
// connection still closes.
func TestLazyDeadlinesApply(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const limit = 100 * time.Millisecond
	s := &Server{ReadHeaderTimeout: limit, IdleTimeout: limit, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, "got "+string(b))
	})}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.Serve(context.Background(), c)
		}
	}()
	dial := func(t *testing.T) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	read := func(t *testing.T, br *bufio.Reader) string {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	t.Run("late body", func(t *testing.T) {
		c, br := dial(t)
		for range 2 { // the second on a kept connection
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
			time.Sleep(3 * limit)
			io.WriteString(c, "body")
			if got := read(t, br); got != "got body" {
				t.Fatalf("answer %q, want %q", got, "got body")
			}
		}
	})
	t.Run("stalled head", func(t *testing.T) {
		c, br := dial(t)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
		time.Sleep(3 * limit)
		io.WriteString(c, "\r\n")
		if _, err := br.ReadByte(); err == nil || strings.Contains(err.Error(), "timeout") {
			t.Fatalf("a head past the header timeout: read %v, want the connection closed", err)
		}
	})
	t.Run("idle", func(t *testing.T) {
		c, br := dial(t)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if got := read(t, br); got != "got " {
			t.Fatalf("answer %q", got)
		}
		start := time.Now()
		if _, err := br.ReadByte(); err == nil || strings.Contains(err.Error(), "timeout") {
			t.Fatalf("idle connection: read %v, want it closed", err)
		}
		if time.Since(start) > 20*limit {
			t.Fatalf("idle connection closed after %v", time.Since(start))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Shutdown(ctx)
}
