package e2e

import (
	"context"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
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
	ids, web := startGammaMesh(t, apiSA, nil, "api-v1", "api-v2")
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

	socket := adminv1.AdminSocket(ids.m.DataDir)
	out := harness.MustRun(t, "sigil", "apply", "-f", writeFile(t, ids.m.Dir, gammaRoute), "--admin-socket", socket)
	if !strings.Contains(out, "httproute.gateway.networking.k8s.io/api created") {
		t.Fatalf("apply said: %s", out)
	}
	if got := harness.MustRun(t, "sigil", "get", "httproutes", "--admin-socket", socket); !strings.Contains(got, "callers of api.default:80") {
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

// startGammaMesh starts a mesh whose web sidecar may call every service
// (gammaPolicy), and backends: one app and sidecar per service named,
// served by identity id, whose entry allows them all (a route's
// backendRefs name Services of their own). appArgs go to every app.
func startGammaMesh(t *testing.T, id string, appArgs []string, services ...string) (identities, *harness.ProxyProc) {
	t.Helper()
	ids := startIdentities(t)
	policyDir := filepath.Join(ids.m.Dir, "gamma-policy")
	if err := os.MkdirAll(policyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(policyDir, "authz.rego"), []byte(gammaPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	entry := []string{"--selector", "unix:uid:" + myUID}
	for _, svc := range services {
		entry = append(entry, "--service", svc)
	}
	ids.m.Entry("node4", id, entry...)
	backends := ids.m.StartAgent("node4")
	for _, svc := range services {
		_, addr := harness.StartApp(t, svc, appArgs...)
		harness.StartProxy(t, backends, svc, addr, policyDir)
	}
	_, webApp := harness.StartApp(t, "web")
	return ids, harness.StartProxy(t, ids.web, "web", webApp, policyDir)
}

// gammaGRPCRoute sends Watch, and calls with x-tenant: b, to grpc-b, and
// splits the rest 3:1 between grpc-a and grpc-b; each backend marks its
// answers with x-backend.
const gammaGRPCRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: grpc}]
  rules:
  - matches: [{method: {service: grpc.health.v1.Health, method: Watch}}, {headers: [{name: x-tenant, value: b}]}]
    backendRefs: [{name: grpc-b, port: 50051, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-backend, value: b}]}}]}]
  - backendRefs:
    - {name: grpc-a, port: 50051, weight: 3, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-backend, value: a}]}}]}
    - {name: grpc-b, port: 50051, weight: 1, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-backend, value: b}]}}]}
`

// A GRPCRoute applied with sigil apply routes real gRPC calls through
// real sidecars: a method match and a header match go to grpc-b, the
// rest splits 3:1 (within ±10 points over 400 calls).
func TestGatewayAPIGRPCRouteRouting(t *testing.T) {
	t.Parallel()
	ids, web := startGammaMesh(t, grpcSA, []string{"--grpc"}, "grpc-a", "grpc-b")
	harness.MustRun(t, "sigil", "apply", "-f", writeFile(t, ids.m.Dir, gammaGRPCRoute), "--admin-socket", adminv1.AdminSocket(ids.m.DataDir))
	conn, err := grpc.NewClient("passthrough:///"+web.Outbound, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc:50051"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	check := func(md ...string) string {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(t.Context(), md...), 10*time.Second)
		defer cancel()
		var hdr metadata.MD
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&hdr)); err != nil {
			return "error: " + err.Error()
		}
		return strings.Join(hdr.Get("x-backend"), ",")
	}
	deadline := time.Now().Add(20 * time.Second)
	for check("x-tenant", "b") != "b" || check() == "" {
		if time.Now().After(deadline) {
			t.Fatalf("route never applied: %q %q", check("x-tenant", "b"), check())
		}
		time.Sleep(20 * time.Millisecond) // polling what the sidecar does; its config version is not exposed to the app
	}
	for range 20 {
		if got := check("x-tenant", "b"); got != "b" {
			t.Fatalf("header match answered by %q", got)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	watch, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	if hdr, err := watch.Header(); err != nil || strings.Join(hdr.Get("x-backend"), ",") != "b" {
		t.Fatalf("Watch (method match) answered by %v: %v", hdr, err)
	}
	cancel()
	by := map[string]int{}
	for range 400 {
		by[check()]++
	}
	if a := float64(by["a"]) / 4; math.Abs(a-75) > 10 || by["a"]+by["b"] != 400 {
		t.Fatalf("3:1 split measured %v over 400 calls", by)
	}
	t.Logf("3:1 split measured %v", by)
}
