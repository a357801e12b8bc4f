//go:build linux

package loop

import (
	"bufio"
	"io"
	"testing"
	"time"
)

// TestNoLostWakeup: a dial that ends while the loop handles the batch
// its eventfd is in must still be adopted at once. Each new connection
// dials its upstream; none may wait for an unrelated event (seen as a
// stall of about a second, or for ever on a quiet loop).
func TestNoLostWakeup(t *testing.T) {
	up := upstream(t, &echo{})
	f := start(t, Config{}, up.Listener.Addr().String(), false)
	var slowest time.Duration
	for range 300 {
		c := f.dial()
		start := time.Now()
		c.SetDeadline(start.Add(waitFor))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		readResponse(t, bufio.NewReader(c), "GET")
		slowest = max(slowest, time.Since(start))
		c.Close()
	}
	if slowest > 500*time.Millisecond {
		t.Fatalf("slowest exchange %v: a wakeup was lost", slowest)
	}
}
