//go:build linux

package loop

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// heldConn holds what is written to it once hold is set, and writes it
// in one piece at Close: a TLS peer's last records (an answer's head,
// part of its body, close_notify) reach the loop in one read.
type heldConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
}

func (c *heldConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold {
		c.buf = append(c.buf, b...)
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *heldConn) Close() error {
	c.mu.Lock()
	buf := c.buf
	c.buf = nil
	c.mu.Unlock()
	c.Conn.SetWriteDeadline(time.Time{}) // crypto/tls's close_notify left one passed
	c.Conn.Write(buf)
	return c.Conn.Close()
}

// TestNoResendAfterAnswerBegan: an upstream (TLS) whose answer's head,
// part of its body and close_notify come in one read answered the
// request: the Resender was told its status, and the hang-up that cuts
// the body is no reset "before the answer began". The request is not
// sent again elsewhere (a POST would run twice), and the Resender is
// not asked again.
func TestNoResendAfterAnswerBegan(t *testing.T) {
	srvCfg, pool := testCerts(t)
	cut := &testUpstream{key: "cut", tls: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, addr: rawUpstream(t, func(c net.Conn) {
		hc := &heldConn{Conn: c}
		tc := tls.Server(hc, srvCfg)
		if _, err := http.ReadRequest(bufio.NewReader(tc)); err != nil {
			tc.Close()
			return
		}
		hc.mu.Lock()
		hc.hold = true
		hc.mu.Unlock()
		fmt.Fprint(tc, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
		tc.Close()
	})}
	var healthy atomic.Int32
	good := &testUpstream{key: "good", addr: statusServer(t, "good", 200, &healthy)}
	r := &resender{status: 0, next: good, done: make(chan int, 1)}
	f := start(t, Config{Handler: handlerFunc(func(*Caller, *h1.Head) Verdict {
		return Verdict{Upstream: cut, Exchange: r}
	})}, "", false)
	c := f.caller()
	if _, err := fmt.Fprint(c.c, "POST /pay HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"); err != nil {
		t.Fatal(err)
	}
	<-r.done
	if n := healthy.Load(); n != 0 || fmt.Sprint(r.asked) != "[200]" {
		t.Fatalf("the request was sent again after its answer began: %d requests elsewhere, Resender asked %v", n, r.asked)
	}
}
