package h2conn

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// firstConn is the client's one connection.
func firstConn(t *testing.T, cl *Client) *clientConn {
	t.Helper()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if len(cl.conns) != 1 {
		t.Fatalf("%d connections, want 1", len(cl.conns))
	}
	return cl.conns[0]
}

func closedWith(t *testing.T, cc *clientConn, want error) {
	t.Helper()
	select {
	case <-cc.done:
	case <-time.After(10 * time.Second):
		t.Fatal("connection still open")
	}
	if want != nil && !errors.Is(cc.err, want) {
		t.Fatalf("closed with %v, want %v", cc.err, want)
	}
}

// TestIdleConnectionsClose: either side closes a connection left without
// streams for its IdleTimeout.
func TestIdleConnectionsClose(t *testing.T) {
	for _, tc := range []struct {
		name               string
		serverIdle, client time.Duration
	}{
		{"server idle timeout", 50 * time.Millisecond, 0},
		{"client idle timeout", 0, 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, &Server{Handler: http.HandlerFunc(echo), IdleTimeout: tc.serverIdle}, nil)
			cl := client(t, addr, nil, Limits{})
			cl.IdleTimeout = tc.client
			resp, err := cl.RoundTrip(newReq(t, "GET", "/", ""))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			closedWith(t, firstConn(t, cl), nil)
		})
	}
}

// TestPingKeepsAliveOrCloses: a client PINGs a silent connection; a peer
// that answers keeps it, one that does not loses it.
func TestPingKeepsAliveOrCloses(t *testing.T) {
	t.Run("answering peer", func(t *testing.T) {
		cl := client(t, serve(t, &Server{Handler: http.HandlerFunc(echo)}, nil), nil, Limits{})
		cl.PingInterval, cl.PingTimeout = 20*time.Millisecond, time.Second
		resp, err := cl.RoundTrip(newReq(t, "GET", "/", ""))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		cc := firstConn(t, cl)
		// Each PING's ACK is a frame read: wait for three.
		start := cc.framesRead.Load()
		for deadline := time.Now().Add(10 * time.Second); cc.framesRead.Load() < start+3; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("no PING answered")
			}
		}
		if cc.err != nil {
			t.Fatal(cc.err)
		}
	})
	t.Run("silent peer", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			// SETTINGS, then nothing: PINGs are read and never answered.
			http2.NewFramer(c, nil).WriteSettings()
			io.Copy(io.Discard, c)
		}()
		cl := client(t, ln.Addr().String(), nil, Limits{})
		cl.PingInterval, cl.PingTimeout = 20*time.Millisecond, 20*time.Millisecond
		cc, err := cl.dial(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		closedWith(t, cc, errPingTimeout)
	})
}

// TestRetireDrains: a retired client's connection finishes the stream in
// flight, then closes; the next request dials a new one.
func TestRetireDrains(t *testing.T) {
	release := make(chan struct{})
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "late")
	})}
	cl := client(t, serve(t, srv, nil), nil, Limits{})
	resp, err := cl.RoundTrip(newReq(t, "GET", "/", ""))
	if err != nil {
		t.Fatal(err)
	}
	old := firstConn(t, cl)
	cl.Retire()
	close(release)
	if b, err := io.ReadAll(resp.Body); string(b) != "late" || err != nil {
		t.Fatalf("in-flight body %q, %v", b, err)
	}
	resp.Body.Close()
	closedWith(t, old, errIdle)
	resp, err = cl.RoundTrip(newReq(t, "GET", "/", ""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if firstConn(t, cl) == old {
		t.Fatal("a retired connection took a new stream")
	}
}

// TestReadDeadlineResetsStream: a handler's read deadline (as the proxy's
// body-rate watch sets it) ends a body that does not arrive.
func TestReadDeadlineResetsStream(t *testing.T) {
	got := make(chan error, 1)
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
			got <- err
			return
		}
		_, err := io.ReadAll(r.Body)
		got <- err
	})}
	cl := client(t, serve(t, srv, nil), nil, Limits{})
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("POST", "https://peer/", pr)
	go func() {
		if resp, err := cl.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write([]byte("a trickle"))
	if err := <-got; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("body read: %v, want the deadline", err)
	}
}
