//go:build linux

package loop

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// countingConn counts the reads through it: HandoffWrap's wrapper.
type countingConn struct {
	net.Conn
	reads *atomic.Int32
}

func (c countingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

// TestHandoff: a request the loop does not carry (an Upgrade) hands its
// connection to Config.Handoff at the request boundary, after the
// answers before it: the handed connection reads that request first
// (also when it came pipelined behind another), over the same TLS
// session, with Take's value, and what follows it through HandoffWrap's
// wrapper; the upstream never sees it.
func TestHandoff(t *testing.T) {
	for _, tlsCallers := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[tlsCallers], func(t *testing.T) {
			up := &echo{}
			var reads atomic.Int32
			handed, got := make(chan string, 2), make(chan bool, 2)
			cfg := Config{
				HandoffWrap: func(c net.Conn) net.Conn { return countingConn{c, &reads} },
				Handoff: func(c net.Conn, value any) {
					defer c.Close()
					br := bufio.NewReader(c)
					req, err := http.ReadRequest(br)
					if err != nil {
						handed <- "read: " + err.Error()
						return
					}
					// The tunnel's first bytes, sent once the request was
					// taken: they come from the socket, through the wrapper.
					got <- true
					if ping := make([]byte, 4); func() error { _, err := io.ReadFull(br, ping); return err }() != nil || string(ping) != "ping" {
						handed <- "no ping after the request"
						return
					}
					cs, isTLS := c.(interface{ ConnectionState() tls.ConnectionState })
					handed <- req.Method + " " + req.URL.Path + " " + req.Header.Get("Upgrade") + " " + value.(string) +
						map[bool]string{false: " plain", true: " tls"}[isTLS && cs.ConnectionState().HandshakeComplete]
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhanded")
				},
			}
			f := start(t, cfg, strings.TrimPrefix(upstream(t, up).URL, "http://"), tlsCallers)
			want := "GET /ws websocket caller " + map[bool]string{false: "plain", true: "tls"}[tlsCallers]
			for _, pipelined := range []bool{false, true} {
				c := f.dial()
				br := bufio.NewReader(c)
				first := "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
				upgrade := "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
				if pipelined {
					io.WriteString(c, first+upgrade)
				} else {
					io.WriteString(c, first)
				}
				if _, body := readResponse(t, br, "GET"); body != "GET /first " {
					t.Fatalf("first answer %q", body)
				}
				if !pipelined {
					io.WriteString(c, upgrade)
				}
				<-got
				io.WriteString(c, "ping")
				if _, body := readResponse(t, br, "GET"); body != "handed" {
					t.Fatalf("pipelined %v: answer %q, want the handed connection's", pipelined, body)
				}
				if got := <-handed; got != want {
					t.Fatalf("pipelined %v: Handoff got %q, want %q", pipelined, got, want)
				}
				expectEOF(t, br)
			}
			if reads.Load() == 0 {
				t.Error("HandoffWrap's wrapper was not read through")
			}
			for _, r := range up.requests() {
				if r != "GET /first" {
					t.Errorf("the upstream got %s", r)
				}
			}
		})
	}
}
