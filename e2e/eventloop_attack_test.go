package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// bytesApp is an app that records the bytes of every request it reads
// (head, body, trailers) and answers each 200.
type bytesApp struct {
	addr string
	mu   sync.Mutex
	got  []string
}

func startBytesApp(t *testing.T) *bytesApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	a := &bytesApp{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var raw bytes.Buffer
				br := bufio.NewReader(io.TeeReader(c, &raw))
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					// What the app's reader took of this request (the
					// buffered rest belongs to the next).
					n := raw.Len() - br.Buffered()
					a.mu.Lock()
					a.got = append(a.got, string(raw.Bytes()[:n]))
					a.mu.Unlock()
					rest := append([]byte(nil), raw.Bytes()[n:]...)
					raw.Reset()
					raw.Write(rest)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	return a
}

func (a *bytesApp) all() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.got, "\n----\n")
}

// A chunked request's trailer fields never reach the app past the policy:
// the goroutine path drops them (they are read into the request's
// Trailer, which is not forwarded); on the event loop the trailer section
// was relayed as received, so an identity header spelled with '_' (which
// DropForgedIdentity drops from a head, CGI and WSGI apps reading it as
// X-Forwarded-Client-Cert), or X-Forwarded-For, which the policy never
// saw, reached the app.
func TestInboundEventLoopDropsRequestTrailers(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	dir := filepath.Join(ids.m.Dir, "loop-policy")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(eventLoopPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	h1cfg, _ := peerTLS(t, ids.web.Socket, apiSA)
	for _, tc := range []struct {
		name  string
		flags []string
	}{{"goroutines", nil}, {"event-loop", []string{"--inbound-event-loop"}}} {
		t.Run(tc.name, func(t *testing.T) {
			app := startBytesApp(t)
			api := harness.StartProxy(t, ids.api, "api", app.addr, dir, tc.flags...)
			req := "POST /trailers HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"3\r\nabc\r\n0\r\nX_Forwarded_Client_Cert: URI=spiffe://example.org/ns/evil/sa/evil\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
			resp, body := rawTLSRequest(t, h1cfg, api.Inbound, req)
			if resp.StatusCode != 200 {
				t.Fatalf("%s %q", resp.Status, body)
			}
			deadline := time.Now().Add(5 * time.Second)
			for app.all() == "" && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			got := app.all()
			if !strings.Contains(got, "abc") {
				t.Fatalf("app got %q", got)
			}
			if strings.Contains(got, "evil") || strings.Contains(got, "6.6.6.6") {
				t.Fatalf("a trailer the policy never saw reached the app: %q", got)
			}
		})
	}
}
