//go:build linux

package loop

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// tlsServer is an HTTPS server of echo, counting the connections it
// accepted; pool trusts its certificate (for 127.0.0.1, good for an
// hour).
func tlsServer(t *testing.T) (addr string, accepted *atomic.Int32, cfg *tls.Config) {
	srvCfg, pool := testCerts(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int32)
	srv := &http.Server{Handler: &echo{}, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepted.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), accepted, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

// TestUpstreamDialTLS: an Upstream whose Dial returns a TLS
// configuration is spoken to over TLS, and its connection pooled.
func TestUpstreamDialTLS(t *testing.T) {
	addr, accepted, cfg := tlsServer(t)
	u := &testUpstream{key: "tls", addr: addr, tls: cfg}
	f := start(t, Config{Handler: byPath(map[byte]Upstream{'t': u}, Verdict{})}, "", false)
	c1, c2 := f.caller(), f.caller()
	for i, c := range []*caller{c1, c2, c1} {
		if status, body := c.get("/t"); status != 200 || body != "GET /t " {
			t.Fatalf("request %d: %d %q", i, status, body)
		}
	}
	if d, n := u.dials.Load(), accepted.Load(); d != 1 || n != 1 {
		t.Errorf("%d dials, %d connections; want 1", d, n)
	}
}

// TestUpstreamLeafNotAfter: a TLS upstream's connection carries no
// request past its certificate's expiry (an hour, on the loop's clock):
// the next one dials anew.
func TestUpstreamLeafNotAfter(t *testing.T) {
	addr, accepted, cfg := tlsServer(t)
	clock := newFakeClock()
	u := &testUpstream{key: "tls", addr: addr, tls: cfg}
	f := start(t, Config{Now: clock.now, UpstreamIdleTimeout: 24 * time.Hour,
		Handler: byPath(map[byte]Upstream{'t': u}, Verdict{})}, "", false)
	c := f.caller()
	for i, d := range []time.Duration{0, 30 * time.Minute, 31 * time.Minute} {
		clock.add(d)
		if status, body := c.get("/t"); status != 200 || body != "GET /t " {
			t.Fatalf("request %d: %d %q", i, status, body)
		}
		if got, want := accepted.Load(), int32(1+i/2); got != want {
			t.Errorf("request %d: %d connections, want %d", i, got, want)
		}
	}
}
