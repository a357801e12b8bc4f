package proxy

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

func TestIdleConnCutsSilentPeers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	il := idleListener{ln, 100 * time.Millisecond}
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := il.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 8)
	// A peer that keeps sending is never cut off.
	for range 3 {
		time.AfterFunc(50*time.Millisecond, func() { client.Write([]byte("x")) })
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("active peer cut off: %v", err)
		}
	}
	start := time.Now()
	_, err = c.Read(buf)
	if !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("silent peer: %v after %s", err, time.Since(start))
	}
}
