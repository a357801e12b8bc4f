package e2e

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// gammaPolicy lets web call every service: the test is about routing.
const gammaPolicy = `package sigil.authz

default allow := false

allow if input.source.principal == "spiffe://example.org/ns/default/sa/web"
`

// gammaRoute is an HTTPRoute attached to the Service api (GAMMA): a
// header match, a ReplacePrefixMatch rewrite, and an 80/20 split between
// the Services api-v1 and api-v2 for the rest.
const gammaRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules:
  - matches: [{headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: api-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
    backendRefs: [{name: api-v1, port: 80}]
  - backendRefs: [{name: api-v1, port: 80, weight: 80}, {name: api-v2, port: 80, weight: 20}]
`

// An HTTPRoute applied with the real `sigil apply` reaches real sidecars
// as the VirtualService gatewayapi makes of it: the 80/20 split between
// two Services lands within ±4 points over 1000 requests, a header match
// sends every request to api-v2, and ReplacePrefixMatch rewrites "/old"
// segment-wise ("/old/x" → "/new/x", "/old" → "/new", "/oldx" is not
// matched by the prefix and is split as it was sent).
func TestGatewayAPIHTTPRouteRouting(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	policyDir := filepath.Join(ids.m.Dir, "gamma-policy")
	if err := os.MkdirAll(policyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(policyDir, "authz.rego"), []byte(gammaPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	// The two backends are Services of their own (a route's backendRefs
	// name Services), served by an identity whose entry allows both.
	ids.m.Entry("node4", apiSA, "--selector", "unix:uid:"+myUID, "--service", "api-v1", "--service", "api-v2")
	backends := ids.m.StartAgent("node4")
	for _, svc := range []string{"api-v1", "api-v2"} {
		_, addr := harness.StartApp(t, svc)
		harness.StartProxy(t, backends, svc, addr, policyDir)
	}
	_, webApp := harness.StartApp(t, "web")
	web := harness.StartProxy(t, ids.web, "web", webApp, policyDir)
	proxyURL, _ := url.Parse("http://" + web.Outbound)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxIdleConnsPerHost: 16}}
	get := func(path string, hdr map[string]string) (int, appReplyPath) {
		req, _ := http.NewRequest("GET", "http://api"+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, appReplyPath{}
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var r appReplyPath
		json.Unmarshal(body, &r)
		return resp.StatusCode, r
	}

	file := filepath.Join(ids.m.Dir, "route.yaml")
	if err := os.WriteFile(file, []byte(gammaRoute), 0o644); err != nil {
		t.Fatal(err)
	}
	socket := adminv1.AdminSocket(ids.m.DataDir)
	out := harness.MustRun(t, "sigil", "apply", "-f", file, "--admin-socket", socket)
	if !strings.Contains(out, "httproute.gateway.networking.k8s.io/api created") {
		t.Fatalf("apply said: %s", out)
	}
	if got := harness.MustRun(t, "sigil", "get", "httproutes", "--admin-socket", socket); !strings.Contains(got, "api") {
		t.Fatalf("sigil get httproutes:\n%s", got)
	}
	// Until web's sidecar has the route and both Services' endpoints,
	// the header match's answers are not all api-v2's.
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, r := get("/", map[string]string{"x-canary": "yes"})
		code1, r1 := get("/old", nil)
		if code == 200 && r.Service == "api-v2" && code1 == 200 && r1.Service == "api-v1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("route never applied: %d %+v, %d %+v", code, r, code1, r1)
		}
		time.Sleep(20 * time.Millisecond) // polling what the sidecar does; its config version is not exposed to the app
	}

	for range 50 {
		if code, r := get("/any", map[string]string{"x-canary": "yes"}); code != 200 || r.Service != "api-v2" {
			t.Fatalf("header match: %d %+v", code, r)
		}
	}
	for path, want := range map[string]string{"/old": "/new", "/old/": "/new/", "/old/a/b": "/new/a/b"} {
		if code, r := get(path, nil); code != 200 || r.Service != "api-v1" || r.Path != want {
			t.Errorf("%s: %d %+v, want api-v1 with path %s", path, code, r, want)
		}
	}
	by := map[string]int{}
	for range 1000 {
		code, r := get("/oldx", nil)
		if code != 200 || r.Path != "/oldx" {
			t.Fatalf("split request: %d %+v", code, r)
		}
		by[r.Service]++
	}
	v1 := float64(by["api-v1"]) / 10
	if math.Abs(v1-80) > 4 {
		t.Fatalf("80/20 split measured %.1f/%.1f over 1000 requests: %v", v1, 100-v1, by)
	}
	t.Logf("80/20 split measured %.1f/%.1f", v1, 100-v1)
}

// appReplyPath is the demo app's answer, with the path it received.
type appReplyPath struct {
	Service string `json:"service"`
	Path    string `json:"path"`
}
