//go:build linux

package loop

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// TestUpstreamCloseAfterAnswer: an upstream that closes its connection
// once its answer is sent (Connection: close, or a kept-alive one it
// ends) must not cut the answer short for a caller still reading what
// is queued for it.
func TestUpstreamCloseAfterAnswer(t *testing.T) {
	const size = 4 * maxQueued
	big := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	want := sha256.Sum256(big)
	for _, connClose := range []bool{true, false} {
		t.Run(fmt.Sprintf("connection-close=%v", connClose), func(t *testing.T) {
			addr := rawUpstream(t, func(c net.Conn) {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n", len(big))
				if connClose {
					head += "Connection: close\r\n"
				}
				io.WriteString(c, head+"\r\n")
				c.Write(big)
			})
			f := startWith(t, Config{}, addr, false, smallBuffers)
			c := f.dial()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
			if err != nil {
				t.Fatal(err)
			}
			sum, err := slowRead(resp, 16<<10, time.Millisecond)
			if err != nil || !bytes.Equal(sum, want[:]) {
				t.Fatalf("the answer did not arrive whole: %v", err)
			}
		})
	}
}

// flushConn holds what is written to it until flush, so that a TLS
// record and the close_notify after it leave in one write.
type flushConn struct {
	net.Conn
	hold bool // set after the handshake
	buf  bytes.Buffer
}

func (c *flushConn) Write(p []byte) (int, error) {
	if !c.hold {
		return c.Conn.Write(p)
	}
	return c.buf.Write(p)
}

func (c *flushConn) flush() error {
	_, err := c.Conn.Write(c.buf.Bytes())
	c.buf.Reset()
	return err
}

// TestUpstreamTLSCloseNotify: a TLS upstream's last answer, arriving in
// the same read as its close_notify, reaches the caller; its
// Connection: close ends the upstream's connection only (hop-by-hop),
// and the caller's next request goes on a new one.
func TestUpstreamTLSCloseNotify(t *testing.T) {
	srvCfg, pool := testCerts(t)
	addr := rawUpstream(t, func(c net.Conn) {
		defer c.Close()
		fc := &flushConn{Conn: c}
		tc := tls.Server(fc, srvCfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		fc.hold = true
		if _, err := http.ReadRequest(bufio.NewReader(tc)); err != nil {
			return
		}
		io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
		tc.CloseWrite()
		c.SetWriteDeadline(time.Time{}) // CloseWrite leaves one set
		fc.flush()
		io.Copy(io.Discard, c)
	})
	f := start(t, Config{UpstreamTLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}, addr, false)
	c := f.dial()
	br := bufio.NewReader(c)
	for range 3 {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "hello" || resp.Close {
			t.Fatalf("%d %q close %v", resp.StatusCode, body, resp.Close)
		}
	}
}

// TestResendOnKeptConnectionClose: an upstream that closes a kept
// connection just as the next request arrives (its keep-alive timeout
// racing the request) has the request sent once more on a new
// connection when it may be: no body, an idempotent method. A POST is
// not sent again: the caller gets 502. On a fresh connection nothing is
// sent again either.
func TestResendOnKeptConnectionClose(t *testing.T) {
	var seen atomic.Int32
	addr := rawUpstream(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			seen.Add(1)
			if i == 1 {
				return // the second request on a connection: closed unanswered
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	f := start(t, Config{}, addr, false)
	for _, tc := range []struct {
		second string
		want   int
	}{
		{"GET /again HTTP/1.1\r\nHost: x\r\n\r\n", 200},
		{"POST /once HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx", 502},
	} {
		c := f.dial()
		br := bufio.NewReader(c)
		io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, _ := readResponse(t, br, "GET"); resp.StatusCode != 200 {
			t.Fatalf("first: %d", resp.StatusCode)
		}
		before := seen.Load()
		io.WriteString(c, tc.second)
		resp, _ := readResponse(t, br, "GET")
		if resp.StatusCode != tc.want {
			t.Errorf("%.20q: %d, want %d", tc.second, resp.StatusCode, tc.want)
		}
		if n, want := seen.Load()-before, map[int]int32{200: 2, 502: 1}[tc.want]; n != want {
			t.Errorf("%.20q: the upstream read it %d times, want %d", tc.second, n, want)
		}
		c.Close()
	}
}

// TestHangUpBlame: an exchange cut within its answer tells its Exchange
// who hung up: ErrCallerHungUp when the caller left (the upstream
// answered; it is not to blame), plain ErrHungUp when the upstream did.
func TestHangUpBlame(t *testing.T) {
	for _, callerLeaves := range []bool{true, false} {
		t.Run(fmt.Sprintf("caller-leaves=%v", callerLeaves), func(t *testing.T) {
			release := make(chan struct{})
			addr := rawUpstream(t, func(c net.Conn) {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npart of it")
				if callerLeaves {
					<-release // the answer stays unfinished until the test ends
				}
			})
			t.Cleanup(func() { close(release) })
			x := newExchange()
			f := start(t, Config{Handler: handlerFunc(func(*Caller, *h1.Head) Verdict { return Verdict{Exchange: x} })}, addr, false)
			c := f.dial()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
				t.Fatal(err)
			}
			if callerLeaves {
				c.Close()
			}
			d := x.await(t)
			if d.status != 200 || !errors.Is(d.err, ErrHungUp) || errors.Is(d.err, ErrCallerHungUp) != callerLeaves {
				t.Errorf("Done(%d, %v), want 200 and ErrHungUp, ErrCallerHungUp %v", d.status, d.err, callerLeaves)
			}
		})
	}
}
