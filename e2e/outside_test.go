package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// startProxyResolving starts sigil-proxy as harness.StartProxy does, in a
// mount namespace of its own whose /etc/hosts is hosts (unshare, as
// root), so that it resolves test names of hosts outside the mesh
// without DNS.
func startProxyResolving(t *testing.T, agent *harness.AgentProc, service, app, policy, hosts string) *harness.ProxyProc {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("a mount namespace with its own /etc/hosts needs root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not installed")
	}
	file := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(file, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--socket", agent.Socket, "--service", service, "--app", app, "--policy", policy,
		"--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"}
	script := `mount --bind "$0" /etc/hosts && exec "$@"`
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, file, harness.Bin("sigil-proxy")}, args...)...)
	p := &harness.ProxyProc{Proc: harness.StartCmd(t, "sigil-proxy", cmd)}
	m := p.WaitFor(`"msg":"sigil-proxy running".*"inbound":"([^"]+)","outbound":"([^"]+)","admin":"([^"]+)"`, 60*time.Second)
	p.Inbound, p.Outbound, p.Admin = m[1], m[2], m[3]
	return p
}

// TestVirtualServiceOutsideMesh: a VirtualService for a host outside the
// mesh (a plain HTTP server no sidecar fronts, reached as its
// DestinationRule's tls DISABLE says) applies at the real sidecar: its
// route's timeout answers 504 before the slow server does, its
// headers.request.set reaches the server (without the mesh's identity
// header), and a route of it to a mesh service goes to that service's
// sidecar. Before, the sidecar sent every request for the host straight
// to it, the VirtualService unread.
func TestVirtualServiceOutsideMesh(t *testing.T) {
	var seen atomic.Value
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Clone())
		if r.URL.Path == "/slow" {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
		}
		fmt.Fprintf(w, "outside %s", r.URL.Path)
	}))
	defer plain.Close()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"})
	_, app := harness.StartApp(t, "web-outside")
	web := startProxyResolving(t, tm.ids.web, "web", app, tm.ids.policyDir, "127.0.0.1 localhost\n127.0.0.1 ext.example.test\n")
	proxyURL, _ := url.Parse("http://" + web.Outbound)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	_, port, _ := net.SplitHostPort(plain.Listener.Addr().String())
	host := "ext.example.test:" + port
	tm.apply(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ext
spec:
  hosts: [ext.example.test]
  http:
  - match: [{uri: {prefix: /slow}}]
    timeout: 300ms
    route: [{destination: {host: ext.example.test}}]
  - match: [{uri: {prefix: /to-mesh}}]
    route: [{destination: {host: api}}]
  - headers:
      request:
        set: {x-egress-route: ext}
    route: [{destination: {host: ext.example.test}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ext
spec:
  host: ext.example.test
  trafficPolicy:
    tls: {mode: DISABLE}
`)
	get := func(path string) (int, string, time.Duration) {
		start := time.Now()
		req, _ := http.NewRequest("GET", "http://"+host+path, nil)
		req.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://example.org/ns/default/sa/admin")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start)
	}
	// The routes reach the sidecar after the apply; the header set is the
	// sign that the VirtualService is in force.
	code, body, _ := get("/hello")
	if code != 200 || body != "outside /hello" {
		t.Fatalf("GET /hello: %d %q", code, body)
	}
	h := seen.Load().(http.Header)
	if got := h.Get("X-Egress-Route"); got != "ext" {
		t.Errorf("the host outside the mesh got X-Egress-Route %q, want ext (headers.request.set)", got)
	}
	if got := h.Get("X-Forwarded-Client-Cert"); got != "" {
		t.Errorf("the host outside the mesh got X-Forwarded-Client-Cert %q", got)
	}
	code, body, took := get("/slow")
	if code != http.StatusGatewayTimeout || took > 2*time.Second {
		t.Errorf("GET /slow: %d %q after %v, want 504 from the route's 300ms timeout", code, body, took)
	}
	code, body, _ = get("/to-mesh")
	var r appReply
	if code != 200 || json.Unmarshal([]byte(body), &r) != nil || r.Service != "api-v1" {
		t.Errorf("GET /to-mesh: %d %q, want api-v1's answer", code, body)
	}
}
