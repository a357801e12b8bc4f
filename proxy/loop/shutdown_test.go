//go:build linux

package loop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestShutdownSlowReader: Shutdown after an exchange is over does not
// cut short the answer still queued for a slow caller.
func TestShutdownSlowReader(t *testing.T) {
	const size = 4 * maxQueued
	big := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	want := sha256.Sum256(big)
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(big) }))
	xs := make(chan *exchangeRec, 10)
	f := startWith(t, Config{Handler: denyPOST(xs)}, up.Listener.Addr().String(), false, smallBuffers)
	c := f.dial()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		sum []byte
		err error
	}
	read := make(chan result, 1)
	go func() {
		sum, err := slowRead(resp, 16<<10, time.Millisecond)
		read <- result{sum, err}
	}()
	if d := (<-xs).await(t); d.err != nil {
		t.Fatalf("Done(%d, %v)", d.status, d.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := f.l.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	r := <-read
	if r.err != nil || !bytes.Equal(r.sum, want[:]) {
		t.Fatalf("the answer did not arrive whole: %v", r.err)
	}
}

// TestShutdownDuringDroppedBody: a connection whose answered request's
// body is still being dropped when Shutdown begins serves no further
// request and is closed, and Shutdown returns.
func TestShutdownDuringDroppedBody(t *testing.T) {
	e := &echo{}
	up := upstream(t, e)
	xs := make(chan *exchangeRec, 10)
	f := start(t, Config{Handler: denyPOST(xs)}, up.Listener.Addr().String(), false)
	c := f.dial()
	io.WriteString(c, "POST /deny HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
	br := bufio.NewReader(c)
	if resp, _ := readResponse(t, br, "POST"); resp.StatusCode != 403 {
		t.Fatalf("%d", resp.StatusCode)
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		shut <- f.l.Shutdown(ctx)
	}()
	(<-xs).await(t)
	// Whether these arrive before or after the drain, no request after
	// the one answered is served.
	io.WriteString(c, "67890GET /after-shutdown HTTP/1.1\r\nHost: x\r\n\r\n")
	expectEOF(t, br)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if got := e.requests(); len(got) != 0 {
		t.Errorf("upstream saw %q during Shutdown", got)
	}
}

// TestShutdownAfterClose: Shutdown after (or during) Close returns once
// the loop has stopped.
func TestShutdownAfterClose(t *testing.T) {
	up := upstream(t, &echo{})
	f := start(t, Config{}, up.Listener.Addr().String(), false)
	c := f.dial()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	readResponse(t, bufio.NewReader(c), "GET")
	f.l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := f.l.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown after Close: %v", err)
	}
}

// TestWakeAfterClose: once the loop has stopped, neither Close nor
// Shutdown writes to the descriptor number its eventfd had, which may
// now be anything else's.
func TestWakeAfterClose(t *testing.T) {
	l, err := New(Config{Dial: dialTo("127.0.0.1:1")})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	// The eventfd's number now names a pipe's write end (the pipe may
	// have got it already).
	if p[1] != l.wakefd {
		if err := unix.Dup3(p[1], l.wakefd, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(l.wakefd)
	}
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l.Shutdown(ctx)
	var b [64]byte
	if n, _ := unix.Read(p[0], b[:]); n > 0 {
		t.Fatalf("the stopped loop wrote %x to descriptor %d, no longer its own", b[:n], l.wakefd)
	}
}

// TestCloseCancelsDial: Close does not leave a dial running until
// DialTimeout.
func TestCloseCancelsDial(t *testing.T) {
	dialing, ended := make(chan struct{}), make(chan struct{})
	cfg := Config{DialTimeout: time.Minute, Dial: func(ctx context.Context) (net.Conn, error) {
		close(dialing)
		<-ctx.Done()
		close(ended)
		return nil, ctx.Err()
	}}
	f := start(t, cfg, "", false)
	c := f.dial()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-dialing
	f.l.Close()
	select {
	case <-ended:
	case <-time.After(2 * time.Second):
		t.Fatal("the dial still runs after Close")
	}
}
