//go:build linux

package loop

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestIdleTimeoutSlowReader: the idle timeout does not cut short an
// answer still being delivered to a slow caller.
func TestIdleTimeoutSlowReader(t *testing.T) {
	const size = 2 * maxQueued
	big := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	want := sha256.Sum256(big)
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(big) }))
	f := startWith(t, Config{IdleTimeout: 100 * time.Millisecond}, up.Listener.Addr().String(), false, smallBuffers)
	c := f.dial()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := slowRead(resp, 8<<10, 5*time.Millisecond)
	if err != nil || !bytes.Equal(sum, want[:]) {
		t.Fatalf("the answer did not arrive whole: %v", err)
	}
}

// TestIdleTimeoutStalledReader: a caller that takes nothing of an
// answer read whole from the upstream (under maxQueued: the exchange is
// over) is still closed by the idle timeout.
func TestIdleTimeoutStalledReader(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*maxQueued/4/16)
	up := upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(big) }))
	f := startWith(t, Config{IdleTimeout: 100 * time.Millisecond}, up.Listener.Addr().String(), false, smallBuffers)
	c := f.dial()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(time.Second) // stalled: no progress for ten idle timeouts
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err != nil {
		return // closed before the head: also a close
	}
	if b, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("a stalled caller got its %d-byte answer whole: not closed", len(b))
	}
}
