package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// recordingApp is the api service's app in the test's own process: it
// keeps every request it gets and answers with the headers it saw.
type recordingApp struct {
	mu   sync.Mutex
	seen []*http.Request
	srv  *http.Server
	addr string
}

func startRecordingApp(t *testing.T) *recordingApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &recordingApp{addr: ln.Addr().String()}
	a.srv = &http.Server{Handler: a, ReadHeaderTimeout: 10 * time.Second}
	go a.srv.Serve(ln)
	t.Cleanup(func() { a.srv.Close() })
	return a
}

func (a *recordingApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.seen = append(a.seen, r)
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"host": r.Host, "path": r.URL.Path, "headers": r.Header})
}

// requests returns what the app has received so far.
func (a *recordingApp) requests() []*http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*http.Request(nil), a.seen...)
}

// recordingMesh is web calling api (the recording app) through their
// sidecars; web knows api by --upstream.
type recordingMesh struct {
	web, api       *harness.ProxyProc
	app            *recordingApp
	webAgentSocket string // web's Workload API: the test can act as web itself
}

func startRecordingMesh(t *testing.T) *recordingMesh {
	t.Helper()
	ids := startIdentities(t)
	app := startRecordingApp(t)
	api := harness.StartProxy(t, ids.api, "api", app.addr, ids.policyDir)
	_, webApp := harness.StartApp(t, "web")
	web := harness.StartProxy(t, ids.web, "web", webApp, ids.policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA)
	return &recordingMesh{web: web, api: api, app: app, webAgentSocket: ids.web.Socket}
}

// sendRaw writes one HTTP/1.1 request as given to addr and returns
// the status of the answer.
func sendRaw(t *testing.T, addr, req string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := rawExchange(t, c, req)
	return resp.StatusCode
}

// rawExchange writes req on c, reads the response and its body, and
// closes c.
func rawExchange(t *testing.T, c net.Conn, req string) (*http.Response, string) {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// An app using its sidecar as an HTTP proxy reaches mesh services only by
// their own names: a host outside the mesh whose first label is a mesh
// service's name (api.github.com, with api in the mesh) gets 502 and
// never reaches that service, whatever form the request takes, and a
// malformed host gets 400.
func TestExternalNamesNotRoutedIntoMesh(t *testing.T) {
	t.Parallel()
	rm := startRecordingMesh(t)
	proxyURL, _ := url.Parse("http://" + rm.web.Outbound)
	viaProxy := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}

	// Control: the mesh's own forms of api reach it.
	wantSeen := 0
	for _, host := range []string{"api", "api.default", "api.default.svc", "API.default.svc.cluster.local.:8080"} {
		resp, err := viaProxy.Get("http://" + host + "/ok")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", host, resp.Status)
		}
		wantSeen++
	}

	// Absolute form, with credentials meant for the outside name.
	req, _ := http.NewRequest("GET", "http://api.github.com/user", nil)
	req.Header.Set("Authorization", "Bearer ghp_not-for-the-mesh")
	resp, err := viaProxy.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("absolute-form api.github.com: %s, want 502", resp.Status)
	}

	// CONNECT, as HTTPS clients use a proxy.
	if code := sendRaw(t, rm.web.Outbound, "CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n"); code != http.StatusBadGateway {
		t.Errorf("CONNECT api.github.com:443: %d, want 502", code)
	}
	// HTTPS through the proxy, end to end, fails the same way.
	tlsClient := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := tlsClient.Get("https://api.github.com/user"); err == nil {
		resp.Body.Close()
		t.Errorf("https://api.github.com through the proxy: %s", resp.Status)
	}

	// Origin form: the Host header names the service.
	for host, want := range map[string]int{
		"api.github.com":               http.StatusBadGateway,
		"api.github.com:80":            http.StatusBadGateway,
		"api.other":                    http.StatusBadGateway, // api lives in default
		"api.default.svc.example.com":  http.StatusBadGateway,
		"api.default.svc.cluster.evil": http.StatusBadGateway,
		"127.0.0.1":                    http.StatusBadGateway,
		"[::1]:80":                     http.StatusBadGateway,
		"api..":                        http.StatusBadRequest,
		"api:":                         http.StatusBadRequest,
		"api:abc":                      http.StatusBadRequest,
		"api:99999":                    http.StatusBadRequest,
		"[::1":                         http.StatusBadRequest,
		"a@api":                        http.StatusBadRequest,
		"ap%69":                        http.StatusBadRequest,
		"\xc3\xa4pi":                   http.StatusBadRequest,
	} {
		if code := sendRaw(t, rm.web.Outbound, "GET /user HTTP/1.1\r\nHost: "+host+"\r\nAuthorization: Bearer x\r\n\r\n"); code != want {
			t.Errorf("Host %q: %d, want %d", host, code, want)
		}
	}
	if code := sendRaw(t, rm.web.Outbound, "GET /user HTTP/1.1\r\nHost: \r\n\r\n"); code != http.StatusBadRequest {
		t.Errorf("empty Host: %d, want 400", code)
	}
	if code := sendRaw(t, rm.web.Outbound, "GET http://a@api/user HTTP/1.1\r\nHost: api\r\n\r\n"); code != http.StatusBadRequest {
		t.Errorf("userinfo in the target: %d, want 400", code)
	}

	// HTTP/2 without TLS (h2c, as gRPC apps speak): the :authority.
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	for authority, want := range map[string]int{"api.github.com": http.StatusBadGateway, "api.other.svc.cluster.local": http.StatusBadGateway, "api": 200} {
		req, _ := http.NewRequest("GET", "http://"+rm.web.Outbound+"/user", nil)
		req.Host = authority
		req.Header.Set("Authorization", "Bearer x")
		resp, err := h2c.RoundTrip(req)
		if err != nil {
			t.Fatalf("h2c %s: %v", authority, err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != want {
			t.Errorf("h2c :authority %s: %s %s, want %d", authority, resp.Proto, resp.Status, want)
		}
		if want == 200 {
			wantSeen++
		}
	}

	// The app saw the control requests and nothing else.
	seen := rm.app.requests()
	for _, r := range seen {
		if r.URL.Path != "/ok" && !(r.URL.Path == "/user" && r.Host == "api") {
			t.Errorf("the mesh app got %s %s (Host %q, Authorization %q)", r.Method, r.URL, r.Host, r.Header.Get("Authorization"))
		}
	}
	if len(seen) != wantSeen {
		t.Errorf("the mesh app got %d requests, want %d", len(seen), wantSeen)
	}
	if m := httpGet(t, "http://"+rm.web.Admin+"/metrics"); strings.Contains(m, "github") {
		t.Errorf("a refused host became a metric label:\n%s", grepLines(m, "github"))
	}
}
