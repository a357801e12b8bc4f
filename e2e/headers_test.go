package e2e

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// rawTLSRequest writes one HTTP/1.1 request as given over mTLS to addr
// and returns the response, its body read.
func rawTLSRequest(t *testing.T, cfg *tls.Config, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rawExchange(t, c, req)
}

// A caller cannot make a sidecar drop the headers it adds: a Connection
// header naming the identity header (or trace context, or a header that
// framing and routing depend on) is refused before it reaches the app, and
// a forged identity header, however spelled, never reaches it. Checked on
// both sides: at api's inbound sidecar (a caller using its SVID directly,
// over HTTP/1.1 and HTTP/2) and at web's outbound sidecar.
func TestHopByHopCannotRemoveSidecarHeaders(t *testing.T) {
	t.Parallel()
	rm := startRecordingMesh(t)
	api := rm.api
	// web itself, with its SVID, not through its sidecar: a mesh identity
	// the inbound sidecar must not trust with its headers.
	h1, h2cfg := peerTLS(t, rm.webAgentSocket, apiSA)

	// Inbound, HTTP/1.1: the identity header cannot be named away.
	for _, opt := range []string{"X-Forwarded-Client-Cert", "x-forwarded-client-cert, close", "Traceparent", "Host", "Content-Length", "Content-Type", "X-Request-Id"} {
		resp, body := rawTLSRequest(t, h1, api.Inbound, "GET /named HTTP/1.1\r\nHost: api\r\nConnection: "+opt+"\r\n\r\n")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Connection header may not name") {
			t.Errorf("inbound, Connection: %s: %s %q, want 400", opt, resp.Status, body)
		}
	}
	// A custom header named by Connection goes, the identity header stays,
	// and forged identity headers, however spelled, are replaced.
	resp, body := rawTLSRequest(t, h1, api.Inbound, "GET /custom HTTP/1.1\r\nHost: api\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\n"+
		"x-forwarded-client-cert: URI=spiffe://example.org/ns/evil/sa/evil\r\nX-Forwarded-Client-Cert: URI=spiffe://example.org/ns/evil/sa/evil2\r\nX_Forwarded_Client_Cert: URI=spiffe://example.org/ns/evil/sa/evil\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("inbound custom hop header: %s %s", resp.Status, body)
	}

	// Inbound, HTTP/2 (as sidecars speak to each other): forged identity
	// headers in lower case and with underscores.
	h2 := &http.Transport{TLSClientConfig: h2cfg, ForceAttemptHTTP2: true}
	defer h2.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "https://"+api.Inbound+"/h2", nil)
	req.Host = "api"
	req.Header["x-forwarded-client-cert"] = []string{"URI=spiffe://example.org/ns/evil/sa/evil"}
	req.Header["X_forwarded_client_cert"] = []string{"URI=spiffe://example.org/ns/evil/sa/evil"}
	r2, err := h2.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.ProtoMajor != 2 || r2.StatusCode != 200 {
		t.Fatalf("inbound h2: %s %s", r2.Proto, r2.Status)
	}

	// Outbound: the app's own sidecar refuses the same, and passes the
	// rest on with the identity header api's sidecar sets.
	if code := sendRaw(t, rm.web.Outbound, "GET /named HTTP/1.1\r\nHost: api\r\nConnection: Traceparent\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"); code != http.StatusBadRequest {
		t.Errorf("outbound, Connection: Traceparent: %d, want 400", code)
	}
	if code := sendRaw(t, rm.web.Outbound, "GET /outbound HTTP/1.1\r\nHost: api\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX_Forwarded_Client_Cert: URI=spiffe://example.org/ns/evil/sa/evil\r\n\r\n"); code != 200 {
		t.Errorf("outbound custom hop header: %d", code)
	}

	seen := rm.app.requests()
	paths := map[string]bool{}
	for _, r := range seen {
		paths[r.URL.Path] = true
		if r.URL.Path == "/named" {
			t.Errorf("a refused request reached the app: %s %v", r.URL.Path, r.Header)
		}
		xfcc := r.Header.Values("X-Forwarded-Client-Cert")
		if len(xfcc) != 1 || !strings.Contains(xfcc[0], "URI="+webSA) || strings.Contains(xfcc[0], "evil") {
			t.Errorf("%s: the app got X-Forwarded-Client-Cert %q, want exactly the sidecar's naming %s", r.URL.Path, xfcc, webSA)
		}
		for k := range r.Header {
			if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "X-Forwarded-Client-Cert") && k != "X-Forwarded-Client-Cert" {
				t.Errorf("%s: the app got a forged identity header %s", r.URL.Path, k)
			}
		}
		if r.Header.Get("X-Hop") != "" || r.Header.Get("Connection") != "" {
			t.Errorf("%s: hop-by-hop headers reached the app: %v", r.URL.Path, r.Header)
		}
	}
	for _, p := range []string{"/custom", "/h2", "/outbound"} {
		if !paths[p] {
			t.Errorf("the app never got %s", p)
		}
	}
}

// The sidecars pass on the request the app sent and add only their own
// headers (the identity header, trace context): no User-Agent or
// Accept-Encoding the app never sent reaches the peer app (or its policy,
// which reads request.headers). Go's transports add both by default, and
// with Accept-Encoding they also unzip the answer behind the app's back.
// Checked for HTTP/2 from the app (h2c, between sidecars over HTTP/2) and
// for an HTTP/1.1 Upgrade (which the inbound sidecar proxies to the app
// with a different transport).
func TestSidecarsAddNoRequestHeaders(t *testing.T) {
	t.Parallel()
	rm := startRecordingMesh(t)
	h2c := &http.Transport{Protocols: new(http.Protocols), DisableCompression: true}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://"+rm.web.Outbound+"/added-h2", nil)
	req.Host = "api"
	req.Header["User-Agent"] = []string{""} // Go's client then sends none
	resp, err := h2c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("h2c: %s", resp.Status)
	}
	if code := sendRaw(t, rm.web.Outbound, "GET /added-upgrade HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"); code == 0 {
		t.Fatal("upgrade: no answer")
	}
	seen := map[string]bool{}
	for _, r := range rm.app.requests() {
		seen[r.URL.Path] = true
		for _, h := range []string{"User-Agent", "Accept-Encoding"} {
			if v, ok := r.Header[h]; ok {
				t.Errorf("%s: the app got %s %q, which the caller never sent", r.URL.Path, h, v)
			}
		}
	}
	for _, p := range []string{"/added-h2", "/added-upgrade"} {
		if !seen[p] {
			t.Errorf("the app never got %s", p)
		}
	}
}

// trailerSetter is a request body that adds trailer fields to its
// request as it ends, as a client computing them from the body would:
// Go's clients send every field Trailer then holds, declared or not.
type trailerSetter struct {
	body    *strings.Reader
	trailer http.Header
	add     http.Header
}

func (s *trailerSetter) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if err != nil {
		for k, v := range s.add {
			s.trailer[k] = v
		}
	}
	return n, err
}

// A forged identity header never reaches the app as a trailer field over
// HTTP/2 either: a caller declares a trailer (so the server keeps every
// field that comes after the body, declared or not) and then sends the
// identity header, in lower case and with underscores, among them. The
// declared field the app expects still reaches it.
func TestForgedIdentityTrailersNeverReachApp(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	app := startBytesApp(t)
	api := harness.StartProxy(t, ids.api, "api", app.addr, eventLoopPolicyDir(t, ids.m))
	_, h2cfg := peerTLS(t, ids.web.Socket, apiSA)
	h2 := &http.Transport{TLSClientConfig: h2cfg, ForceAttemptHTTP2: true}
	defer h2.CloseIdleConnections()
	for i, forged := range []string{"X-Forwarded-Client-Cert", "X_forwarded_client_cert"} {
		trailer := http.Header{"X-Sum": nil}
		if i == 1 {
			trailer[forged] = nil // declared this time
		}
		body := &trailerSetter{body: strings.NewReader("abc"), trailer: trailer,
			add: http.Header{"X-Sum": {"42"}, forged: {"URI=spiffe://example.org/ns/evil/sa/evil"}}}
		req, _ := http.NewRequest("POST", "https://"+api.Inbound+"/h2-trailers", body)
		req.Host, req.Trailer, req.ContentLength = "api", trailer, -1
		resp, err := h2.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
			t.Fatalf("%s: %s %s", forged, resp.Proto, resp.Status)
		}
	}
	got := app.all()
	if strings.Count(got, "X-Sum: 42") != 2 {
		t.Errorf("the declared X-Sum did not reach the app both times: %q", got)
	}
	if strings.Contains(got, "evil") {
		t.Fatalf("a forged identity trailer reached the app: %q", got)
	}
}
