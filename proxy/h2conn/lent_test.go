package h2conn

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestLentBodyResetEndsWrite: a body larger than the pooled chunk is
// lent to the writer uncopied and the handler's Write waits until the
// writer is done with it; when the client cancels the stream, that Write
// returns an error (it does not wait forever), and after many such
// cancels the connection still answers.
func TestLentBodyResetEndsWrite(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 8<<20)
	writeErr := make(chan error, 64)
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/small" {
			io.WriteString(w, "ok")
			return
		}
		_, err := w.Write(big)
		writeErr <- err
	})}
	addr := serve(t, srv, nil)
	// A stream window over the connection's: the writer is lent as much
	// as the connection window allows, and a reset comes while most of
	// it is still unwritten. The client buffers at most 1 MiB of unread
	// body before it stops returning connection window, so at most the
	// 4 MiB window, that buffer and one credit (6 MiB) can leave before
	// the reset arrives; with the default 16 MiB buffer the whole body
	// could be written first and its Write rightly return nil.
	cl := client(t, addr, nil, Limits{StreamWindow: 16 << 20, ConnBuffer: 1 << 20})
	const resets = 24
	for i := range resets {
		ctx, cancel := context.WithCancel(context.Background())
		req := newReq(t, "GET", "/big", "").WithContext(ctx)
		resp, err := cl.RoundTrip(req)
		if err != nil {
			cancel()
			t.Fatalf("request %d: %v", i, err)
		}
		var p [1024]byte
		if _, err := io.ReadFull(resp.Body, p[:]); err != nil {
			t.Fatalf("request %d: reading: %v", i, err)
		}
		cancel()
		resp.Body.Close()
		select {
		case err := <-writeErr:
			if err == nil {
				t.Fatalf("request %d: the handler's Write of a reset stream returned no error", i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("request %d: the handler's Write still waits 10 s after the reset", i)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.RoundTrip(newReq(t, "GET", "/small", "").WithContext(ctx))
	if err != nil {
		t.Fatalf("after %d resets: %v", resets, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "ok" {
		t.Fatalf("after %d resets: %q, %v", resets, b, err)
	}
}

// TestLentBodyResetGivesWindowBack: when a stream is reset while the
// writer still holds most of a lent body (its peer stopped reading, so
// the socket is full), the writer sends no more of it and the bytes it
// never sent go back to the connection's send window: the window plus
// what the peer received adds up to all the peer granted. A window lost
// per reset would, reset after reset, stall every stream on the
// connection.
func TestLentBodyResetGivesWindowBack(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 8<<20)
	writeErr := make(chan error, 1)
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := w.Write(big)
		writeErr <- err
	})}
	addr := serve(t, srv, nil)
	p := dialPeer(t, addr)
	const grant = 16 << 20
	p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: grant})
	p.fr.WriteWindowUpdate(0, grant)
	p.open(1, "/big")
	var received atomic.Int64
	p.until("DATA", func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		if ok {
			received.Add(int64(len(d.Data())))
		}
		return ok
	})
	p.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	go func() {
		for {
			f, err := p.fr.ReadFrame()
			if err != nil {
				return
			}
			if d, ok := f.(*http2.DataFrame); ok {
				received.Add(int64(len(d.Data())))
			}
		}
	}()
	select {
	case err := <-writeErr:
		if err == nil {
			t.Fatal("the handler's Write of a reset stream returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's Write still waits 10 s after the reset")
	}
	srv.mu.Lock()
	var sc *serverConn
	for c := range srv.conns {
		sc = c
	}
	srv.mu.Unlock()
	const granted = 65535 + grant
	var win int64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		sc.mu.Lock()
		win = sc.sendWin
		sc.mu.Unlock()
		if win+received.Load() == granted {
			if received.Load() >= int64(len(big)) {
				t.Fatalf("the whole body was sent before the reset was seen (%d bytes): nothing tested", received.Load())
			}
			return
		}
	}
	t.Fatalf("send window %d + %d bytes received = %d, want all granted, %d", win, received.Load(), win+received.Load(), granted)
}
