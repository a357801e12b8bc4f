package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// tunnelCall opens a CONNECT tunnel to authority through a sidecar's
// outbound (opaque TCP: one new connection each time), sends one HTTP GET
// of path through it, and returns the answer's status and body.
func tunnelCall(outbound, authority, path string) (int, string, error) {
	c, err := net.DialTimeout("tcp", outbound, 5*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return 0, "", fmt.Errorf("connect: %w", err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), fmt.Errorf("connect: %s", resp.Status)
	}
	host, _, _ := net.SplitHostPort(authority)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		return 0, "", fmt.Errorf("tunnelled request: %w", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), nil
}

// TestTCPRouteWeightedShift is Istio's TCP traffic-shifting task: a
// VirtualService's tcp route on port 31400 sends 80% of the connections
// to v1 and 20% to v2, each connection whole to one of them; a
// connection on another port is not matched and goes to the service.
func TestTCPRouteWeightedShift(t *testing.T) {
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"})
	tm.apply(t, subsetsDR+`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api-tcp
spec:
  hosts: [api]
  tcp:
  - match: [{port: 31400}]
    route:
    - destination: {host: api, subset: v1}
      weight: 80
    - destination: {host: api, subset: v2}
      weight: 20
  - match: [{port: 31401}]
    route:
    - destination: {host: api, subset: v2}
`)
	const n = 200
	counts := map[string]int{}
	var mu sync.Mutex
	var failed atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= n {
				code, body, err := tunnelCall(tm.web.Outbound, "api:31400", "/tcp")
				var r appReply
				if err != nil || code != 200 || json.Unmarshal([]byte(body), &r) != nil {
					failed.Add(1)
					t.Logf("connection failed: %d %v %q", code, err, body)
					continue
				}
				mu.Lock()
				counts[r.Service]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d connections failed", failed.Load(), n)
	}
	// Binomial(200, 0.8): mean 160, sd 5.66; 135..185 is ±4.4 sd, so a
	// correct split fails this about once in 100,000 runs, while a 50/50
	// split (mean 100) or no routing at all never passes.
	if v1 := counts["api-v1"]; v1 < 135 || v1 > 185 || v1+counts["api-v2"] != n {
		t.Fatalf("80/20 over %d connections: %v", n, counts)
	}
	t.Logf("80/20 over %d connections: %v", n, counts)
	for range 20 {
		code, body, err := tunnelCall(tm.web.Outbound, "api:31401", "/tcp")
		if err != nil || code != 200 || !strings.Contains(body, `"api-v2"`) {
			t.Fatalf("port 31401 goes to v2 only: %d %v %q", code, err, body)
		}
	}
}

// TestDestinationRuleTLSDisableExternal: a host outside the mesh (a plain
// HTTP server no sidecar fronts) is refused with 502 until a
// DestinationRule with tls DISABLE names it; then the sidecar sends it
// plain HTTP, as a request or a CONNECT tunnel, without the mesh's
// identity headers. SIMPLE originates TLS to a server whose certificate
// the rule's caCertificates and subjectAltNames check.
func TestDestinationRuleTLSDisableExternal(t *testing.T) {
	var seen atomic.Value
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Clone())
		fmt.Fprintf(w, "plain %s %s", r.Method, r.URL.Path)
	}))
	defer plain.Close()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"})
	host := plain.Listener.Addr().String()
	get := func(authority, path string) (int, string) {
		resp, err := tm.client.Get("http://" + authority + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(host, "/before"); code != http.StatusBadGateway {
		t.Fatalf("no DestinationRule: %d %q, want 502", code, body)
	}
	tm.apply(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: plain-http
spec:
  host: 127.0.0.1
  trafficPolicy:
    tls: {mode: DISABLE}
`)
	code, body := get(host, "/hello")
	if code != 200 || body != "plain GET /hello" {
		t.Fatalf("tls DISABLE: %d %q", code, body)
	}
	h := seen.Load().(http.Header)
	for _, k := range []string{"X-Forwarded-Client-Cert", "X-Sigil-Source"} {
		if h.Get(k) != "" {
			t.Errorf("the external host got the mesh's %s: %q", k, h.Get(k))
		}
	}
	if code, body, err := tunnelCall(tm.web.Outbound, host, "/tunnel"); err != nil || code != 200 || body != "plain GET /tunnel" {
		t.Fatalf("CONNECT with tls DISABLE: %d %v %q", code, err, body)
	}
	// Another host outside the mesh is still refused.
	if code, _ := get("127.0.0.3:"+plain.URL[strings.LastIndex(plain.URL, ":")+1:], "/"); code != http.StatusBadGateway {
		t.Fatalf("a host no rule names: %d, want 502", code)
	}

	// SIMPLE: the sidecar originates TLS, checking the server's
	// certificate against caCertificates and subjectAltNames.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this host: %v", err)
	}
	secure := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls %s", r.URL.Path)
	}))
	secure.Listener = ln
	secure.StartTLS()
	defer secure.Close()
	ca := filepath.Join(tm.ids.m.Dir, "external-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: secure.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	rule := func(san string) string {
		return `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: secure
spec:
  host: 127.0.0.2
  trafficPolicy:
    tls:
      mode: SIMPLE
      caCertificates: ` + ca + `
      sni: example.com
      subjectAltNames: [` + san + `]
`
	}
	tm.apply(t, rule("example.com"))
	if code, body := get(ln.Addr().String(), "/secure"); code != 200 || body != "tls /secure" {
		t.Fatalf("tls SIMPLE: %d %q", code, body)
	}
	tm.apply(t, rule("other.example.com"))
	if code, body := get(ln.Addr().String(), "/secure"); code != http.StatusBadGateway || !strings.Contains(body, "subjectAltNames") {
		t.Fatalf("tls SIMPLE to a server with another name: %d %q, want 502 naming subjectAltNames", code, body)
	}

	// Per port, as Istio's egress TLS origination task writes it: SIMPLE
	// at the server's port only; another port of the host is refused.
	_, securePort, _ := net.SplitHostPort(ln.Addr().String())
	tm.apply(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: secure
spec:
  host: 127.0.0.2
  trafficPolicy:
    portLevelSettings:
    - port: {number: `+securePort+`}
      tls: {mode: SIMPLE, caCertificates: `+ca+`, sni: example.com}
`)
	if code, body := get(ln.Addr().String(), "/per-port"); code != 200 || body != "tls /per-port" {
		t.Fatalf("per-port tls SIMPLE: %d %q", code, body)
	}
	if code, body := get("127.0.0.2:"+plain.URL[strings.LastIndex(plain.URL, ":")+1:], "/"); code != http.StatusBadGateway {
		t.Fatalf("a port no level of the rule covers: %d %q, want 502", code, body)
	}
}

// TestTransparentExternalDisable: in transparent mode an app's connection
// to an address outside the mesh (a plain HTTP server on another address
// of the server's namespace, no sidecar before it) is refused until a
// DestinationRule with tls DISABLE names that IP; then it goes through.
func TestTransparentExternalDisable(t *testing.T) {
	t.Parallel()
	clientNS, serverNS, clientIP, serverIP := harness.NetnsPair(t)
	plainIP := strings.TrimSuffix(serverIP, ".2") + ".3"
	if out, err := exec.Command("ip", "-n", serverNS, "addr", "add", plainIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	ids := startIdentities(t)
	harness.StartIn(t, serverNS, "sigil-demo-app", "--listen", plainIP+":9090", "--name", "plain").WaitFor(`listening on`, 30*time.Second)
	web := harness.StartIn(t, clientNS, "sigil-proxy", "run", "--socket", ids.web.Socket, "--service", "web", "--app", "127.0.0.1:8080",
		"--inbound", clientIP+":15006", "--outbound", "127.0.0.1:15001", "--admin", "127.0.0.1:15000", "--policy", ids.policyDir, "--audit-spool-dir", t.TempDir(), "--transparent")
	web.WaitFor(`sigil-proxy running`, 60*time.Second)
	if out, err := exec.Command("ip", "netns", "exec", clientNS, harness.Bin("sigil-proxy"), "iptables", "--proxy-uid", "0").CombinedOutput(); err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}
	curl := func() (string, error) {
		out, err := exec.Command("ip", "netns", "exec", clientNS, "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
			"curl", "-sS", "-m", "10", "-w", "\n%{http_code}", "http://"+plainIP+":9090/out").CombinedOutput()
		return string(out), err
	}
	if out, err := curl(); err == nil {
		t.Fatalf("no DestinationRule, yet the external address answered: %s", out)
	}
	web.WaitFor(`transparent connection to an unknown destination refused`, 10*time.Second)
	harness.MustRun(t, "sigil", "apply", "-f", writeFile(t, ids.m.Dir, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: plain
spec:
  host: `+plainIP+`
  trafficPolicy:
    tls: {mode: DISABLE}
`), "--admin-socket", adminv1.AdminSocket(ids.m.DataDir))
	web.WaitFor(`configuration applied","version":1\b`, 20*time.Second)
	out, err := curl()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(out), "200") || !strings.Contains(out, `"plain"`) {
		t.Fatalf("with tls DISABLE: %v: %s", err, out)
	}
	var r appReply
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "\n")]), &r); err != nil || r.Caller != "" {
		t.Fatalf("the external app saw a mesh caller: %+v %v", r, err)
	}
}

// TestTLSRouteSNIPassthrough: the app speaks TLS to api through a CONNECT
// tunnel; the sidecar reads the ClientHello's SNI without terminating it
// and routes the connection by the VirtualService's tls route (SNI
// api.default.svc.cluster.local to v2), carrying the app's own TLS inside
// the mesh's mTLS to the TLS server behind v2's sidecar. Another SNI falls
// to the tcp route (v1).
func TestTLSRouteSNIPassthrough(t *testing.T) {
	tm := startTrafficMesh(t)
	for _, version := range []string{"v1", "v2"} {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s over %s", version, r.TLS.ServerName)
		}))
		t.Cleanup(srv.Close)
		b := &backend{name: "tls-" + version, version: version, addr: srv.Listener.Addr().String()}
		b.proxy = harness.StartProxy(t, tm.ids.api, "api", b.addr, tm.ids.policyDir, "--label", "version="+version)
		tm.backends[b.name] = b
	}
	tm.apply(t, subsetsDR+`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api-tls
spec:
  hosts: [api]
  tls:
  - match: [{sniHosts: [api.default.svc.cluster.local], port: 443}]
    route:
    - destination: {host: api, subset: v2}
  tcp:
  - route:
    - destination: {host: api, subset: v1}
`)
	call := func(sni string) (string, error) {
		c, err := net.DialTimeout("tcp", tm.web.Outbound, 5*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "CONNECT api:443 HTTP/1.1\r\nHost: api:443\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			return "", fmt.Errorf("connect: %v %v", resp, err)
		}
		// The app's own TLS, end to end: the sidecars never see inside it.
		tc := tls.Client(&bufferedConn{Conn: c, r: br}, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
		resp, err = http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			return "", err
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	// Until the sidecars know both endpoints, a route may find none.
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := call("api.default.svc.cluster.local")
		if err == nil && got == "v2 over api.default.svc.cluster.local" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SNI api.default.svc.cluster.local: %q %v, want v2", got, err)
		}
	}
	for range 10 {
		if got, err := call("api.default.svc.cluster.local"); err != nil || got != "v2 over api.default.svc.cluster.local" {
			t.Fatalf("SNI api.default.svc.cluster.local: %q %v, want v2", got, err)
		}
		if got, err := call("other.example"); err != nil || got != "v1 over other.example" {
			t.Fatalf("SNI other.example (tcp route): %q %v, want v1", got, err)
		}
	}
}

// bufferedConn reads through r, which holds bytes already read from Conn.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
