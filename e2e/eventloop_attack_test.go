package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
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
	dir := eventLoopPolicyDir(t, ids.m)
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
			// Declared, the trailer fields an app expects reach it, but
			// never an identity header, in any of its spellings.
			req = "POST /declared HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum, X_Forwarded_Client_Cert\r\n\r\n" +
				"3\r\ndef\r\n0\r\nX-Sum: 42\r\nX_Forwarded_Client_Cert: URI=spiffe://example.org/ns/evil/sa/evil\r\n\r\n"
			resp, body = rawTLSRequest(t, h1cfg, api.Inbound, req)
			if resp.StatusCode != 200 {
				t.Fatalf("%s %q", resp.Status, body)
			}
			for !strings.Contains(app.all(), "def") && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			got = app.all()
			if !strings.Contains(got, "X-Sum: 42") {
				t.Errorf("the declared X-Sum did not reach the app: %q", got)
			}
			if strings.Contains(got, "evil") || strings.Contains(strings.ToLower(got), "x_forwarded_client_cert") {
				t.Fatalf("a declared identity trailer reached the app: %q", got)
			}
		})
	}
}

// A kept HTTP/1.1 connection from another sidecar serves no request past
// the caller's certificate's expiry (proxy/h1's server closes it; the
// caller reconnects with its renewed SVID): short-lived SVIDs are how a
// mesh identity stops being honoured. On the event loop a connection
// made with a certificate that has since expired kept being served.
func TestInboundEventLoopRefusesExpiredPeerOnKeptConnection(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	m.Entry("node1", webSA, "--selector", "unix:uid:"+myUID, "--x509-ttl", "10s")
	m.Entry("node2", apiSA, "--selector", "unix:uid:"+myUID)
	web, apiAgent := m.StartAgent("node1"), m.StartAgent("node2")
	dir := eventLoopPolicyDir(t, m)
	for _, tc := range []struct {
		name  string
		flags []string
	}{{"goroutines", nil}, {"event-loop", []string{"--inbound-event-loop"}}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			app := startBytesApp(t)
			api := harness.StartProxy(t, apiAgent, "api", app.addr, dir, tc.flags...)
			// The SVID is fetched once the sidecar runs (starting it may
			// take longer than the SVID lives under load): the agent
			// renews at half its life, so it has 5 s or more left.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+web.Socket))
			if err != nil {
				t.Fatal(err)
			}
			svid := x.DefaultSVID()
			notAfter := svid.Certificates[0].NotAfter
			cfg := tlsconfig.MTLSClientConfig(svid, x.Bundles, tlsconfig.AuthorizeID(spiffeid.RequireFromString(apiSA)))
			cfg.NextProtos = []string{"http/1.1"}
			c, err := tls.Dial("tcp", api.Inbound, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			send := func(path string) (*http.Response, error) {
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil {
					return nil, err
				}
				resp, err := http.ReadResponse(br, nil)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
				}
				return resp, err
			}
			if resp, err := send("/before"); err != nil || resp.StatusCode != 200 {
				t.Fatalf("before expiry: %v %v", resp, err)
			}
			time.Sleep(time.Until(notAfter) + 1500*time.Millisecond)
			if resp, err := send("/after-expiry"); err == nil {
				t.Errorf("after the caller's certificate expired (%s), the kept connection was served: %s", notAfter.Format(time.RFC3339), resp.Status)
			}
			if got := app.all(); strings.Contains(got, "/after-expiry") {
				t.Errorf("app got a request made with an expired certificate: %q", got)
			}
		})
	}
}

// sigil_listener_connections comes back to zero once the callers'
// connections close: ones the loop served, ones it handed back to the
// goroutine path (HTTP/1.0), and ones the callers dropped mid-request.
func TestInboundEventLoopListenerCount(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	dir := eventLoopPolicyDir(t, ids.m)
	h1cfg, _ := peerTLS(t, ids.web.Socket, apiSA)
	app := startBytesApp(t)
	api := harness.StartProxy(t, ids.api, "api", app.addr, dir, "--inbound-event-loop")
	for i := 0; i < 5; i++ {
		if resp, body := rawTLSRequest(t, h1cfg, api.Inbound, "GET /loop HTTP/1.1\r\nHost: api\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("%s %q", resp.Status, body)
		}
		if resp, body := rawTLSRequest(t, h1cfg, api.Inbound, "GET /old HTTP/1.0\r\nHost: api\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("HTTP/1.0: %s %q", resp.Status, body)
		}
		if resp, _ := rawTLSRequest(t, h1cfg, api.Inbound, "POST /denied HTTP/1.1\r\nHost: api\r\nContent-Length: 3\r\n\r\nabc"); resp.StatusCode != 403 {
			t.Fatalf("denied: %s", resp.Status)
		}
		c, err := tls.Dial("tcp", api.Inbound, h1cfg)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "POST /cut HTTP/1.1\r\nHost: api\r\nContent-Length: 100\r\n\r\nabc")
		time.Sleep(50 * time.Millisecond)
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	var n float64
	for time.Now().Before(deadline) {
		if n = metricValue(t, api.Admin, `sigil_listener_connections\{listener="inbound"\} (\S+)`); n == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n != 0 {
		t.Fatalf("sigil_listener_connections{listener=\"inbound\"} %v after every connection closed", n)
	}
	if n := metricValue(t, api.Admin, `sigil_event_loop_connections\{listener="inbound"\} (\S+)`); n != 0 {
		t.Fatalf("sigil_event_loop_connections %v after every connection closed", n)
	}
}
