package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// TestTwoLabelHostOutsideMesh: at the real sidecar, a request for a
// two-label name outside the mesh (outside.test, resolved by the
// sidecar's own /etc/hosts) goes through its DestinationRule with tls
// DISABLE to a plain-HTTP server on loopback, as Istio reads a dotted
// host; a two-label mesh form of a registered service (api.default)
// still reaches that service, as Kubernetes DNS reads it. sigil apply
// --dry-run warns of a resource naming api.default, which a resource
// reads as a host outside the mesh. Before, outside.test was the service
// outside of namespace test, and its DestinationRule was refused.
func TestTwoLabelHostOutsideMesh(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "outside %s %s", r.Host, r.URL.Path)
	}))
	defer plain.Close()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"})
	_, app := harness.StartApp(t, "web-twolabel")
	web := startProxyResolving(t, tm.ids.web, "web", app, tm.ids.policyDir, "127.0.0.1 localhost\n127.0.0.1 outside.test\n")
	proxyURL, _ := url.Parse("http://" + web.Outbound)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	_, port, _ := net.SplitHostPort(plain.Listener.Addr().String())
	get := func(u string) (int, string) {
		resp, err := client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("http://outside.test:" + port + "/before"); code != http.StatusBadGateway {
		t.Errorf("outside.test without a DestinationRule: %d %q, want 502", code, body)
	}
	out := tm.apply(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: outside
spec:
  host: outside.test
  trafficPolicy:
    tls: {mode: DISABLE}
`)
	if strings.Contains(out, "read as a host outside the mesh") {
		t.Errorf("apply of a DestinationRule reaching outside.test warned: %s", out)
	}
	if code, body := get("http://outside.test:" + port + "/get"); code != 200 || body != "outside outside.test:"+port+" /get" {
		t.Errorf("outside.test through its DISABLE rule: %d %q, want the plain server's answer", code, body)
	}
	code, body := get("http://api.default/mesh")
	var r appReply
	if code != 200 || json.Unmarshal([]byte(body), &r) != nil || r.Service != "api-v1" {
		t.Errorf("api.default: %d %q, want api-v1's answer", code, body)
	}
	path := writeTemp(t, tm, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
spec:
  hosts: [web]
  http:
  - route: [{destination: {host: api.default}}]
`)
	combined, err := exec.Command(harness.Bin("sigil"), "apply", "--dry-run", "-f", path, "--admin-socket", adminv1.AdminSocket(tm.ids.m.DataDir)).CombinedOutput()
	out = string(combined)
	if err != nil {
		t.Fatalf("sigil apply --dry-run: %v: %s", err, out)
	}
	if want := "host api.default is read as a host outside the mesh, as Istio reads dotted names; for the service api in namespace default write api.default.svc.cluster.local"; !strings.Contains(out, want) {
		t.Errorf("sigil apply --dry-run: %s, want a warning %q", out, want)
	}
}
