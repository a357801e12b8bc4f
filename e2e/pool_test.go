package e2e

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// TestPooledConnectionPoisoning: an app that answers one request with more
// than its response (a body on a 204, bytes past Content-Length, bytes
// sent later while the connection idles in the inbound's pool) never gets
// those bytes read as the answer to the next request, which comes from
// another identity.
func TestPooledConnectionPoisoning(t *testing.T) {
	t.Parallel()
	app := startRawApp(t)
	rm := startRawMesh(t, app)
	const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
	sendLate, idleSent := make(chan struct{}), make(chan struct{})
	for _, tc := range []struct {
		name, poison string
		late         bool
	}{
		{"204 with a body", "HTTP/1.1 204 No Content\r\n\r\n" + smuggled, false},
		{"304 with a body", "HTTP/1.1 304 Not Modified\r\n\r\n" + smuggled, false},
		{"past Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + smuggled, false},
		{"later, while idle", "HTTP/1.1 204 No Content\r\n\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app.reset(func(req *http.Request, c net.Conn) bool {
				if req.URL.Path != "/poison" {
					body := "caller=" + req.Header.Get("X-Forwarded-Client-Cert")
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+itoa(len(body))+"\r\n\r\n"+body)
					return true
				}
				io.WriteString(c, tc.poison)
				if tc.late {
					go func() {
						<-sendLate // the response went back, the connection idles
						// The write returns once loopback has handed the
						// bytes to the sidecar's socket.
						io.WriteString(c, smuggled)
						idleSent <- struct{}{}
					}()
				}
				return true
			})
			// web poisons; grpc (another identity) asks next, on the same
			// pool, several times.
			out, _ := exchangeRaw(rm.dialInbound(t, rm.ids.web.Socket), "GET /poison HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
			if strings.Contains(out, "SMUGGLED") {
				t.Errorf("the poisoning caller got %q", out)
			}
			if tc.late {
				sendLate <- struct{}{}
				<-idleSent
			}
			for range 3 {
				out, _ := exchangeRaw(rm.dialInbound(t, rm.ids.grpc.Socket), "GET /mine HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
				if !strings.HasPrefix(out, "HTTP/1.1 200 ") || strings.Contains(out, "SMUGGLED") || !strings.Contains(out, grpcSA) {
					t.Fatalf("the next caller got %q, want its own answer", out)
				}
			}
		})
	}
	metrics := httpGet(t, "http://"+rm.api.Admin+"/metrics")
	// The same on the event loop: its app connections idle in a pool
	// too (the caller's Connection: close is hop-by-hop: it ends the
	// caller's connection, not the app's).
	for _, reason := range []string{"bytes_after_response", "unsolicited_bytes"} {
		if !strings.Contains(metrics, `sigil_upstream_protocol_errors_total{direction="inbound",reason="`+reason+`"}`) {
			t.Errorf("no protocol error counted as %s:\n%s", reason, grepLines(metrics, "protocol_errors"))
		}
	}
}

// TestStalePooledConnection: an app with a short keep-alive timeout
// closes the inbound's pooled connection; the next POST goes on a new
// one and reaches the app once. The same after the app restarts, and after
// the peer sidecar restarts (web's pool to api's inbound).
func TestStalePooledConnection(t *testing.T) {
	t.Parallel()
	app := startRawApp(t)
	inbound := freeAddr(t)
	rm := startRawMesh(t, app, "--inbound", inbound)
	// Like gunicorn's 2 s keep-alive, shortened: the app closes a
	// connection once it has idled 100 ms.
	app.reset(func(req *http.Request, c net.Conn) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		return true
	})
	proxy, _ := url.Parse("http://" + rm.web.Outbound)
	cl := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
	post := func(what string) {
		t.Helper()
		resp, err := cl.Post("http://api/post", "text/plain", strings.NewReader(what))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("%s: %d %q, want 200 ok", what, resp.StatusCode, b)
		}
	}
	countPosts := func() int {
		_, complete := app.seen("/post")
		return len(complete)
	}
	for range 3 {
		post("after an idle close")
		select {
		case <-app.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the app did not close the idle connection")
		}
	}
	post("after the last idle close")
	if n := countPosts(); n != 4 {
		t.Errorf("the app got %d POSTs, want 4 (each once)", n)
	}
	// The app restarts: every pooled connection to it is closed.
	before := countPosts()
	app.restart(t)
	post("after the app restarted")
	// api's sidecar restarts on the same address: web's pooled mTLS
	// connections to it, HTTP/1.1 and HTTP/2, are closed.
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	postH2 := func(what string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+rm.web.Outbound+"/post", strings.NewReader(what))
		req.Host = "api"
		resp, err := (&http.Client{Timeout: 20 * time.Second, Transport: h2}).Do(req)
		if err != nil {
			t.Fatalf("%s (HTTP/2): %v", what, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" || resp.ProtoMajor != 2 {
			t.Fatalf("%s (HTTP/2): %s %d %q, want HTTP/2 200 ok", what, resp.Proto, resp.StatusCode, b)
		}
	}
	postH2("before api's sidecar restarted")
	rm.api.Stop()
	rm.api = harness.StartProxy(t, rm.ids.api, "api", app.addr, filepath.Join(rm.ids.m.Dir, "policy-raw"), "--inbound", inbound)
	post("after api's sidecar restarted")
	postH2("after api's sidecar restarted")
	if n := countPosts() - before; n != 4 {
		t.Errorf("the app got %d POSTs after the restarts, want 4", n)
	}
}

// freeAddr is a loopback address free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestEarlyResponse: an answer that comes before a large request body is
// read — a policy denial at the inbound, an app answering 413 or 200
// first — reaches the caller with its status, and the pool still works.
func TestEarlyResponse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		switch r.URL.Path {
		case "/too-large":
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		case "/early":
			io.WriteString(w, "early")
		default:
			n, _ := io.Copy(io.Discard, r.Body)
			io.WriteString(w, "read "+itoa(int(n)))
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	app := &rawApp{addr: ln.Addr().String()}
	rm := startRawMesh(t, app)
	proxy, _ := url.Parse("http://" + rm.web.Outbound)
	cl := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
	for _, tc := range []struct {
		path string
		size int
		want int
	}{
		{"/deny", 2 << 20, http.StatusForbidden},
		{"/too-large", 4 << 20, http.StatusRequestEntityTooLarge},
		{"/early", 8 << 20, http.StatusOK},
		{"/deny", 8 << 20, http.StatusForbidden},
	} {
		for range 3 {
			resp, err := cl.Post("http://api"+tc.path, "application/octet-stream", bytes.NewReader(make([]byte, tc.size)))
			if err != nil {
				t.Fatalf("POST %s of %d bytes: %v, want %d", tc.path, tc.size, err, tc.want)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("POST %s of %d bytes: %d, want %d", tc.path, tc.size, resp.StatusCode, tc.want)
			}
			// The next request on the pools works.
			resp, err = cl.Post("http://api/read", "text/plain", strings.NewReader("next"))
			if err != nil {
				t.Fatalf("the next POST: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "read 4" {
				t.Errorf("the next POST: %d %q", resp.StatusCode, b)
			}
		}
	}
}
