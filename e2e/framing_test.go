package e2e

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// allowButDeny lets every caller reach api, except at /deny.
const allowButDeny = `package sigil.authz

default allow := false

allow if not startswith(input.request.path, "/deny")
`

// rawMesh is api's sidecar in front of an app the test scripts byte by
// byte, and web's sidecar calling it.
type rawMesh struct {
	ids      identities
	web, api *harness.ProxyProc
	app      *rawApp
}

func startRawMesh(t *testing.T, app *rawApp, apiArgs ...string) *rawMesh {
	t.Helper()
	ids := startIdentities(t)
	dir := filepath.Join(ids.m.Dir, "policy-raw")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(allowButDeny), 0o644); err != nil {
		t.Fatal(err)
	}
	rm := &rawMesh{ids: ids, app: app}
	rm.api = harness.StartProxy(t, ids.api, "api", app.addr, dir, apiArgs...)
	rm.web = harness.StartProxy(t, ids.web, "web", "127.0.0.1:1", dir, "--upstream", "api="+rm.api.Inbound+"@"+apiSA)
	return rm
}

// dialInbound opens an mTLS connection to api's inbound as the workload
// whose agent serves socket (HTTP/1.1 by ALPN), as a peer sidecar would.
func (rm *rawMesh) dialInbound(t *testing.T, socket string) net.Conn {
	t.Helper()
	x509ctx, err := client(t, socket).FetchX509Context(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cfg := tlsconfig.MTLSClientConfig(x509ctx.DefaultSVID(), x509ctx.Bundles, tlsconfig.AuthorizeID(spiffeid.RequireFromString(apiSA)))
	cfg.NextProtos = []string{"http/1.1"}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", rm.api.Inbound, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawApp is an app on a TCP listener: it reads requests with net/http's
// parser, notes each, and answers what respond says (by default a 200
// naming the caller's identity).
type rawApp struct {
	ln   net.Listener
	addr string

	mu       sync.Mutex
	heads    []string // paths of the request heads read
	complete []string // requests read to the end of their body
	respond  func(req *http.Request, c net.Conn) bool
	conns    map[net.Conn]bool
	closed   chan struct{} // told of each connection the app closed
}

func startRawApp(t *testing.T) *rawApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &rawApp{ln: ln, addr: ln.Addr().String(), conns: map[net.Conn]bool{}, closed: make(chan struct{}, 64)}
	t.Cleanup(a.stop)
	go a.serve(ln)
	return a
}

func (a *rawApp) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		a.mu.Lock()
		a.conns[c] = true
		a.mu.Unlock()
		go a.conn(c)
	}
}

func (a *rawApp) conn(c net.Conn) {
	defer func() {
		c.Close()
		a.mu.Lock()
		delete(a.conns, c)
		a.mu.Unlock()
		select {
		case a.closed <- struct{}{}:
		default:
		}
	}()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		a.mu.Lock()
		a.heads = append(a.heads, req.URL.Path)
		respond := a.respond
		a.mu.Unlock()
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		a.mu.Lock()
		a.complete = append(a.complete, req.Method+" "+req.URL.Path)
		a.mu.Unlock()
		if respond != nil {
			if !respond(req, c) {
				return
			}
			continue
		}
		body := "caller=" + req.Header.Get("X-Forwarded-Client-Cert")
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body); err != nil {
			return
		}
	}
}

// stop closes the listener and every connection (an app that exits).
func (a *rawApp) stop() {
	a.ln.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	for c := range a.conns {
		c.Close()
	}
}

// restart is the app started again on the same address.
func (a *rawApp) restart(t *testing.T) {
	t.Helper()
	a.stop()
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.ln = ln
	a.mu.Unlock()
	go a.serve(ln)
}

func (a *rawApp) reset(respond func(*http.Request, net.Conn) bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.heads, a.complete, a.respond = nil, nil, respond
}

// seen lists the heads and the complete requests the app read whose
// path starts with prefix.
func (a *rawApp) seen(prefix string) (heads, complete []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.heads {
		if strings.HasPrefix(p, prefix) {
			heads = append(heads, p)
		}
	}
	for _, r := range a.complete {
		if _, p, _ := strings.Cut(r, " "); strings.HasPrefix(p, prefix) {
			complete = append(complete, r)
		}
	}
	return heads, complete
}

// exchangeRaw writes in and reads everything until the sidecar closes
// the connection (or 10 s pass: then closed is false).
func exchangeRaw(c net.Conn, in string) (out string, closed bool) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, in)
	b, err := io.ReadAll(c)
	return string(b), err == nil
}

// sidecarFramingCases: requests with framing Sigil refuses (RFC 9112),
// for api. later is sent once the app has the head: a body that breaks
// after the request went on, which is then cut off there.
var sidecarFramingCases = []struct {
	name, in string
	want     int
	later    string
}{
	{"CL and TE then a second request", "POST / HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api\r\n\r\n", 400, ""},
	{"TE with space before colon", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, ""},
	{"chunk size 0x5", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400, ""},
	{"chunk size +5", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", 400, ""},
	{"chunk size overflow", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff5\r\nhello\r\n0\r\n\r\n", 400, ""},
	{"TE chunked, chunked", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400, ""},
	{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400, ""},
	{"TE identity", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: identity\r\nContent-Length: 1\r\n\r\nx", 400, ""},
	{"TE xchunked", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400, ""},
	{"TE with vertical tab", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\v\r\n\r\n0\r\n\r\n", 400, ""},
	{"differing Content-Lengths", "POST / HTTP/1.1\r\nHost: api\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", 400, ""},
	{"Content-Length +1", "POST / HTTP/1.1\r\nHost: api\r\nContent-Length: +1\r\n\r\nx", 400, ""},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: api\r\nX-A: a\r\n b\r\n\r\n", 400, ""},
	{"bare CR", "GET / HTTP/1.1\r\nHost: api\r\nX-A: a\rb\r\n\r\n", 400, ""},
	{"NUL in a value", "GET / HTTP/1.1\r\nHost: api\r\nX-A: a\x00b\r\n\r\n", 400, ""},
	{"invalid field name", "GET / HTTP/1.1\r\nHost: api\r\nX(A): b\r\n\r\n", 400, ""},
	{"bad chunk extension", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", 400, ""},
	{"identity in a trailer", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Forwarded-Client-Cert: By=spiffe://example.org/ns/default/sa/admin\r\n\r\n", 400, ""},
	{"HTTP/1.0 with TE", "POST / HTTP/1.0\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, ""},
	{"unknown expectation", "POST / HTTP/1.1\r\nHost: api\r\nExpect: 100-continuex\r\nContent-Length: 1\r\n\r\nx", 417, ""},
	{"chunk data without CRLF", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400, ""},
	{"forbidden trailer", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n", 400, ""},
	{"bad chunk size later", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 400, "0x3\r\nabc\r\n0\r\n\r\n"},
	{"missing CRLF later", "POST / HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 400, "3\r\nabcXX0\r\n\r\n"},
}

// TestHTTP1FramingRefusedBySidecars writes each malformed request on a TCP
// connection to web's outbound (as an app would) and on an mTLS
// connection to api's inbound (as a peer sidecar would, with web's SVID):
// each gets one answer with the status expected, the connection closes,
// and the app never sees the request complete (nor, for a head found
// wrong, at all).
func TestHTTP1FramingRefusedBySidecars(t *testing.T) {
	t.Parallel()
	app := startRawApp(t)
	rm := startRawMesh(t, app)
	sides := []struct {
		name string
		dial func(t *testing.T) net.Conn
	}{
		{"outbound", func(t *testing.T) net.Conn {
			c, err := net.DialTimeout("tcp", rm.web.Outbound, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
		{"inbound", func(t *testing.T) net.Conn { return rm.dialInbound(t, rm.ids.web.Socket) }},
	}
	// The mesh works for a well-formed request first.
	if out, _ := exchangeRaw(sides[0].dial(t), "GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200 ") {
		t.Fatalf("a well-formed request got %q", out)
	}
	for _, side := range sides {
		for i, tc := range sidecarFramingCases {
			t.Run(side.name+"/"+tc.name, func(t *testing.T) {
				// A path of its own, as a late part of an earlier case may
				// still be on its way to the app.
				prefix := "/" + side.name + strconv.Itoa(i)
				in := strings.Replace(strings.Replace(tc.in, " / HTTP", " "+prefix+" HTTP", 1), "/smuggled", prefix+"/smuggled", 1)
				c := side.dial(t)
				if tc.later != "" {
					io.WriteString(c, in)
					waitHead(t, app, prefix)
					in = tc.later
				}
				out, closed := exchangeRaw(c, in)
				if !strings.HasPrefix(out, "HTTP/1.1 "+strconv.Itoa(tc.want)+" ") || strings.Count(out, "HTTP/1.1 ") != 1 || !closed {
					t.Errorf("got %q (closed: %v), want one %d and the connection closed", out, closed, tc.want)
				}
				heads, complete := app.seen(prefix)
				if len(complete) > 0 || len(heads) > 0 && tc.later == "" {
					t.Errorf("the app saw heads %v and complete requests %v, want none", heads, complete)
				}
			})
		}
	}
}

// TestHTTP1FramingRefusedFromApp: responses from the app whose framing is
// refused reach the caller as 502 and are never passed on; one that
// breaks after its head is cut off, never ended as if complete.
func TestHTTP1FramingRefusedFromApp(t *testing.T) {
	t.Parallel()
	app := startRawApp(t)
	rm := startRawMesh(t, app)
	for _, tc := range []struct{ name, resp string }{
		{"CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"TE gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{"chunk size 0x5", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"},
		{"differing lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: a\r\n b\r\n\r\nx"},
		{"space before colon", "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\nContent-Length: 1\r\n\r\nx"},
		{"NUL", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: \x00\r\n\r\nx"},
		{"HTTP/1.0 with TE", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"bad chunk after a good one", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n+3\r\nabc\r\n0\r\n\r\n"},
		{"101 unasked", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app.reset(func(_ *http.Request, c net.Conn) bool {
				io.WriteString(c, tc.resp)
				return true
			})
			out, closed := exchangeRaw(rm.dialInbound(t, rm.ids.web.Socket), "GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
			if !strings.HasPrefix(out, "HTTP/1.1 502 ") || !closed {
				t.Errorf("inbound: got %q, want 502", out)
			}
			out, _ = exchangeRaw(mustDial(t, rm.web.Outbound), "GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
			if !strings.HasPrefix(out, "HTTP/1.1 502 ") {
				t.Errorf("through both sidecars: got %q, want 502", out)
			}
		})
	}
	// A chunk gone wrong after the head was passed on: the caller's
	// response is cut off, never complete.
	headRead := make(chan struct{})
	app.reset(func(_ *http.Request, c net.Conn) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		<-headRead
		io.WriteString(c, "+3\r\nabc\r\n0\r\n\r\n")
		return true
	})
	c := mustDial(t, rm.web.Outbound)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	close(headRead)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the head of a streamed response: %v %v", resp, err)
	}
	if b, err := io.ReadAll(resp.Body); err == nil {
		t.Errorf("a response whose body broke upstream arrived complete: %q", b)
	}
	metrics := httpGet(t, "http://"+rm.api.Admin+"/metrics")
	if !strings.Contains(metrics, `sigil_upstream_protocol_errors_total{direction="inbound",reason="malformed_response"}`) {
		t.Errorf("no protocol error counted:\n%s", grepLines(metrics, "protocol_errors"))
	}
}

// waitHead waits until the app has read the head of a request whose path
// starts with prefix.
func waitHead(t *testing.T, app *rawApp, prefix string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if heads, _ := app.seen(prefix); len(heads) > 0 {
			return
		}
	}
	t.Fatal("the app never got the request's head")
}

func mustDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
