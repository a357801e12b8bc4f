package proxy

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

func TestIdleConnCutsSilentPeers(t *testing.T) {
	// The idle timeout is 25 times the gap between the active peer's
	// writes, so a loaded machine's scheduling delays do not cut it off.
	client, c := idlePair(t, 500*time.Millisecond)
	buf := make([]byte, 8)
	// A peer that keeps sending is never cut off.
	for range 3 {
		time.AfterFunc(20*time.Millisecond, func() { client.Write([]byte("x")) })
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("active peer cut off: %v", err)
		}
	}
	start := time.Now()
	_, err := c.Read(buf)
	if !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("silent peer: %v after %s", err, time.Since(start))
	}
}

// An explicit deadline (how net/http wakes its background read) is not
// pushed back by the idle one.
func TestIdleConnKeepsExplicitDeadline(t *testing.T) {
	client, c := idlePair(t, time.Minute)
	c.SetReadDeadline(time.Unix(1, 0))
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("read after a past deadline: %v after %s; want an immediate timeout", err, time.Since(start))
	}
	// Cleared, the idle timeout applies again.
	c.SetReadDeadline(time.Time{})
	time.AfterFunc(20*time.Millisecond, func() { client.Write([]byte("x")) })
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("read after clearing the deadline: %v", err)
	}
}

// idlePair is a loopback connection whose accepted side is an idleConn.
func idlePair(t *testing.T, idle time.Duration) (client, accepted net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	accepted, err = idleListener{ln, idle}.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); accepted.Close() })
	return client, accepted
}
