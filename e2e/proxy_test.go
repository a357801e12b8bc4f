package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

const (
	webSA  = "spiffe://example.org/ns/default/sa/web"
	apiSA  = "spiffe://example.org/ns/default/sa/api"
	grpcSA = "spiffe://example.org/ns/default/sa/grpc"
)

// webToAPIPolicy lets web GET from api (and call the gRPC health service's
// Check and Watch); everything else is denied by default.
const webToAPIPolicy = `package sigil.authz

default allow := false

allow if {
	input.source.principal == "spiffe://example.org/ns/default/sa/web"
	input.destination.service == "api"
	input.request.method == "GET"
}

allow if {
	input.source.principal == "spiffe://example.org/ns/default/sa/web"
	input.destination.service == "api"
	input.request.protocol == "tcp"
}

allow if {
	input.source.service_account == "web"
	input.destination.service == "grpc"
	input.request.protocol == "grpc"
	input.request.path in {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}
}
`

// meshWithProxies is a server, one agent per service (node1: web, node2:
// api, node3: grpc), the demo apps and their sidecars.
type meshWithProxies struct {
	m             *harness.Mesh
	web, api, rpc *harness.ProxyProc
	policyDir     string
}

// identities is a server with one agent per service identity and the
// policy directory.
type identities struct {
	m              *harness.Mesh
	web, api, grpc *harness.AgentProc
	policyDir      string
}

func startIdentities(t *testing.T, serverArgs ...string) identities {
	t.Helper()
	m := harness.StartMesh(t, serverArgs...)
	m.Entry("node1", webSA, "--selector", "unix:uid:"+myUID)
	m.Entry("node2", apiSA, "--selector", "unix:uid:"+myUID)
	m.Entry("node3", grpcSA, "--selector", "unix:uid:"+myUID)
	ids := identities{m: m, web: m.StartAgent("node1"), api: m.StartAgent("node2"), grpc: m.StartAgent("node3"), policyDir: filepath.Join(m.Dir, "policy")}
	os.MkdirAll(ids.policyDir, 0o755)
	if err := os.WriteFile(filepath.Join(ids.policyDir, "authz.rego"), []byte(webToAPIPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	return ids
}

func startMeshWithProxies(t *testing.T, serverArgs ...string) *meshWithProxies {
	t.Helper()
	ids := startIdentities(t, serverArgs...)
	m, a1, a2, a3, dir := ids.m, ids.web, ids.api, ids.grpc, ids.policyDir
	_, webApp := harness.StartApp(t, "web")
	_, apiApp := harness.StartApp(t, "api")
	_, grpcApp := harness.StartApp(t, "grpc", "--grpc")
	api := harness.StartProxy(t, a2, "api", apiApp, dir, "--access-log", filepath.Join(m.Dir, "api-access.log"), "--decision-log", filepath.Join(m.Dir, "api-decisions.log"))
	rpc := harness.StartProxy(t, a3, "grpc", grpcApp, dir)
	web := harness.StartProxy(t, a1, "web", webApp, dir,
		"--upstream", "api="+api.Inbound+"@"+apiSA,
		"--upstream", "grpc="+rpc.Inbound+"@"+grpcSA,
		"--upstream", "impostor="+api.Inbound+"@"+grpcSA, // api's sidecar claiming to be grpc
	)
	return &meshWithProxies{m: m, web: web, api: api, rpc: rpc, policyDir: dir}
}

type appReply struct {
	Service string            `json:"service"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Body    string            `json:"body"`
	Caller  string            `json:"caller"`
	Host    string            `json:"host"`
	Headers map[string]string `json:"headers"`
}

// curl runs the real curl and returns the HTTP status and body.
func curl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	code, body, err := runCurl(args...)
	if err != nil {
		t.Fatalf("curl %v: %v: %s", args, err, body)
	}
	return code, body
}

// runCurl runs curl and splits its output into status and body.
func runCurl(args ...string) (int, string, error) {
	out, err := exec.Command("curl", append([]string{"-sS", "-m", "20", "-w", "\n%{http_code}"}, args...)...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	i := strings.LastIndex(s, "\n")
	code := 0
	fmt.Sscanf(s[i+1:], "%d", &code)
	return code, s[:max(i, 0)], err
}

func TestProxyHTTPAndPolicy(t *testing.T) {
	t.Parallel()
	mp := startMeshWithProxies(t)

	// curl with the outbound port as its HTTP proxy reaches api; the app
	// sees the caller's SPIFFE ID, and a forged XFCC from the caller is gone.
	code, body := curl(t, "-x", "http://"+mp.web.Outbound, "-H", "X-Forwarded-Client-Cert: URI=spiffe://example.org/ns/evil/sa/evil", "http://api/hello")
	if code != 200 {
		t.Fatalf("GET via proxy: %d %s", code, body)
	}
	var r appReply
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if r.Service != "api" || r.Caller != webSA || strings.Contains(r.Headers["X-Forwarded-Client-Cert"], "evil") {
		t.Fatalf("app saw %+v", r)
	}
	if !strings.HasPrefix(r.Headers["X-Forwarded-Client-Cert"], "By="+apiSA+";Hash=") {
		t.Fatalf("XFCC %q", r.Headers["X-Forwarded-Client-Cert"])
	}
	// Origin-form with a Host header, as load generators send it.
	if code, body := curl(t, "-H", "Host: api:8080", "http://"+mp.web.Outbound+"/hello"); code != 200 || !strings.Contains(body, webSA) {
		t.Fatalf("origin-form: %d %s", code, body)
	}
	// The policy allows GET only.
	if code, body := curl(t, "-x", "http://"+mp.web.Outbound, "-X", "POST", "-d", "x", "http://api/hello"); code != 403 {
		t.Fatalf("POST: %d %s", code, body)
	}
	// An unknown service is refused, not passed through.
	if code, _ := curl(t, "-x", "http://"+mp.web.Outbound, "http://nowhere/"); code != 502 {
		t.Fatalf("unknown service: %d", code)
	}
	// Secure naming: api's sidecar presenting api's SVID where grpc's is
	// expected fails the handshake.
	if code, body := curl(t, "-x", "http://"+mp.web.Outbound, "http://impostor/"); code != 503 || !strings.Contains(body, "unexpected ID") {
		t.Fatalf("impostor: %d %s", code, body)
	}

	// WebSocket upgrade through both sidecars.
	wsCfg, _ := websocket.NewConfig("ws://api/ws", "http://web/")
	conn, err := websocketViaProxy(wsCfg, mp.web.Outbound)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	websocket.Message.Send(conn, "ping through the mesh")
	var echo string
	if err := websocket.Message.Receive(conn, &echo); err != nil || echo != "ping through the mesh" {
		t.Fatalf("websocket echo %q %v", echo, err)
	}
	conn.Close()

	// Metrics, logs and readiness.
	for _, code := range []string{"200", "403"} {
		inbound := map[string]string{"reporter": "destination", "destination_service_name": "api", "request_protocol": "http", "source_principal": webSA, "response_code": code}
		if sumSeries(t, mp.api.Admin, "sigil_requests_total", inbound) == 0 {
			t.Errorf("no sigil_requests_total%v", inbound)
		}
	}
	metrics := httpGet(t, "http://"+mp.api.Admin+"/metrics")
	for _, want := range []string{
		`sigil_policy_decisions_total{result="allow"}`, `sigil_policy_decisions_total{result="deny"}`,
		"sigil_svid_expiry_seconds", "sigil_request_duration_milliseconds_bucket",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if got := httpGet(t, "http://"+mp.api.Admin+"/ready"); !strings.Contains(got, "ready") {
		t.Fatalf("ready: %s", got)
	}
	mp.api.Stop() // flushes the logs
	decisions, _ := os.ReadFile(filepath.Join(mp.m.Dir, "api-decisions.log"))
	access, _ := os.ReadFile(filepath.Join(mp.m.Dir, "api-access.log"))
	if !strings.Contains(string(decisions), `"path":"sigil/authz/allow"`) || !strings.Contains(string(decisions), `"result":false`) {
		t.Fatalf("decision log: %s", decisions)
	}
	if !strings.Contains(string(access), `"status":403`) || !strings.Contains(string(access), `"source":"`+webSA+`"`) {
		t.Fatalf("access log: %s", access)
	}
}

func websocketViaProxy(cfg *websocket.Config, proxyAddr string) (*websocket.Conn, error) {
	// The app sends WebSocket upgrades to its sidecar like any request.
	c, err := (&netDialer{}).dial(proxyAddr)
	if err != nil {
		return nil, err
	}
	cfg.Location, _ = url.Parse("ws://api/ws")
	return websocket.NewClient(cfg, c)
}

func httpGet(t *testing.T, u string) string {
	t.Helper()
	_, body := getStatus(t, u)
	return body
}

// The inbound port takes mTLS from mesh identities only.
func TestInboundRefusesOutsiders(t *testing.T) {
	t.Parallel()
	mp := startMeshWithProxies(t)
	// Plaintext: curl gets no HTTP answer.
	out, err := exec.Command("curl", "-sS", "-m", "10", "http://"+mp.api.Inbound+"/").CombinedOutput()
	if err == nil {
		t.Fatalf("plaintext got an answer: %s", out)
	}
	// TLS without a client certificate.
	out, err = exec.Command("curl", "-sS", "-m", "10", "-k", "https://"+mp.api.Inbound+"/").CombinedOutput()
	if err == nil {
		t.Fatalf("TLS without client cert got an answer: %s", out)
	}
	// A client certificate from another trust domain, with a SPIFFE ID.
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{foreignSVID(t, "spiffe://evil.org/ns/default/sa/web")},
	}}}
	if resp, err := c.Get("https://" + mp.api.Inbound + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("foreign trust domain got %s", resp.Status)
	}
	// TLS 1.2 is refused between proxies.
	c12 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}}}
	if resp, err := c12.Get("https://" + mp.api.Inbound + "/"); err == nil {
		resp.Body.Close()
		t.Fatal("TLS 1.2 accepted")
	}
	metrics := httpGet(t, "http://"+mp.api.Admin+"/metrics")
	for _, reason := range []string{"not_tls", "no_client_certificate", "untrusted_chain", "tls_version"} {
		if !strings.Contains(metrics, `sigil_tls_handshake_failures_total{direction="inbound",reason="`+reason+`"}`) {
			t.Errorf("no handshake failure counted as %s in\n%s", reason, grepLines(metrics, "handshake"))
		}
	}
}

// foreignSVID is an X.509-SVID from a CA the mesh does not trust.
func foreignSVID(t *testing.T, id string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// webHealthClient is a grpc-go health client of the grpc service (the
// demo's grpc:50051) through web's outbound port, closed with the test.
func webHealthClient(t *testing.T, mp *meshWithProxies) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+mp.web.Outbound, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc:50051"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// A grpc-go client reaches a grpc-go server through both sidecars, unary
// and server-streaming, with status and trailers intact; a method the
// policy does not allow is PERMISSION_DENIED.
func TestProxyGRPC(t *testing.T) {
	t.Parallel()
	mp := startMeshWithProxies(t)
	client := webHealthClient(t, mp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check: %v %v", resp, err)
	}
	// A gRPC error status from the server crosses the mesh intact.
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "no-such-service"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Check unknown: %v", err)
	}
	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "flapping"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[healthpb.HealthCheckResponse_ServingStatus]bool{}
	for i := 0; i < 4; i++ {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("Watch message %d: %v", i, err)
		}
		seen[m.GetStatus()] = true
	}
	if len(seen) < 2 {
		t.Fatalf("Watch did not stream changes: %v", seen)
	}
	if _, err := client.List(ctx, &healthpb.HealthListRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("List (not allowed): %v", err)
	}
	// Both sidecars count each call by its gRPC status (trailers, or the
	// headers of a trailers-only answer); a denial is UAEX where it
	// happened. A metric is counted as the handler ends, just after the
	// client has its answer: awaited.
	for _, c := range []struct {
		admin string
		want  map[string]string
	}{
		{mp.web.Admin, map[string]string{"reporter": "source", "request_protocol": "grpc", "grpc_response_status": "0", "destination_principal": grpcSA}},
		{mp.web.Admin, map[string]string{"reporter": "source", "request_protocol": "grpc", "grpc_response_status": "5"}},
		{mp.web.Admin, map[string]string{"reporter": "source", "request_protocol": "grpc", "grpc_response_status": "7"}},
		{mp.rpc.Admin, map[string]string{"reporter": "destination", "request_protocol": "grpc", "grpc_response_status": "5", "source_principal": webSA}},
		{mp.rpc.Admin, map[string]string{"reporter": "destination", "request_protocol": "grpc", "grpc_response_status": "7", "response_flags": "UAEX"}},
	} {
		awaitSeries(t, c.admin, "sigil_requests_total", c.want, 1, 10*time.Second)
	}
}

// SIGTERM drains: a request in flight when the sidecar is told to stop
// completes, and the sidecar then exits cleanly.
func TestProxyDrainsOnSIGTERM(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	app, appAddr := harness.StartApp(t, "api")
	api := harness.StartProxy(t, ids.api, "api", appAddr, ids.policyDir)
	web := harness.StartProxy(t, ids.web, "web", appAddr, ids.policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA)
	drainsInFlight(t, app, api, "http://"+web.Outbound)
	if !strings.Contains(api.Output(), "draining") {
		t.Fatal("no drain logged")
	}
}

// drainsInFlight sends a slow request to api through the outbound
// proxy, sends api's sidecar SIGTERM while app holds it, and fails t
// unless the request is answered 200 and the sidecar exits 0.
func drainsInFlight(t *testing.T, app *harness.Proc, api *harness.ProxyProc, proxy string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		code, body := curlNoFatal("-x", proxy, "http://api/slow?delay=1500ms")
		if code != 200 {
			done <- fmt.Errorf("in-flight request got %d: %s", code, body)
			return
		}
		done <- nil
	}()
	app.WaitFor(`slow request /slow`, 30*time.Second)
	api.Signal(syscall.SIGTERM)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if code := api.Wait(20 * time.Second); code != 0 {
		t.Fatalf("proxy exited %d", code)
	}
}

func curlNoFatal(args ...string) (int, string) {
	code, body, _ := runCurl(args...)
	return code, body
}

// With no usable policy the sidecar denies everything and is not ready; a
// good policy is picked up without a restart; a broken one is refused and
// the good one stays in force.
func TestProxyPolicyReload(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	dir := filepath.Join(ids.m.Dir, "live-policy")
	os.MkdirAll(dir, 0o755)
	policyFile := filepath.Join(dir, "authz.rego")
	os.WriteFile(policyFile, []byte("package sigil.authz\nallow if {"), 0o644) // broken from the start
	_, appAddr := harness.StartApp(t, "api")
	api := harness.StartProxy(t, ids.api, "api", appAddr, dir)
	web := harness.StartProxy(t, ids.web, "web", appAddr, ids.policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA)

	resp, err := http.Get("http://" + api.Admin + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("ready with a broken policy: %s", resp.Status)
	}
	// The probe Kubernetes runs (the injected startup probe) says the same.
	if _, err := harness.Run(t, "sigil-proxy", "ready", "--admin", api.Admin); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("sigil-proxy ready with a broken policy: %v", err)
	}
	if code, _ := curl(t, "-x", "http://"+web.Outbound, "http://api/"); code != 403 {
		t.Fatalf("no policy: %d, want 403", code)
	}
	os.WriteFile(policyFile, []byte(webToAPIPolicy), 0o644)
	api.WaitFor(`"msg":"policy loaded"`, 10*time.Second)
	if code, _ := curl(t, "-x", "http://"+web.Outbound, "http://api/"); code != 200 {
		t.Fatalf("after a good policy: %d", code)
	}
	if got := httpGet(t, "http://"+api.Admin+"/ready"); !strings.HasPrefix(got, "ready") {
		t.Fatalf("ready: %s", got)
	}
	harness.MustRun(t, "sigil-proxy", "ready", "--admin", api.Admin)
	os.WriteFile(policyFile, []byte("package sigil.authz\nallow if { x }\n"), 0o644)
	// `sigil policy check` says what the sidecar will say, before it does.
	if _, err := harness.Run(t, "sigil", "policy", "check", dir); err == nil || !strings.Contains(err.Error(), "var x is unsafe") {
		t.Fatalf("policy check of a broken policy: %v", err)
	}
	api.WaitFor(`policy refused; the policy in force stays`, 10*time.Second)
	if code, _ := curl(t, "-x", "http://"+web.Outbound, "http://api/"); code != 200 {
		t.Fatalf("after a broken policy: %d, want the old policy still in force", code)
	}
	if m := httpGet(t, "http://"+api.Admin+"/metrics"); !strings.Contains(m, `sigil_policy_reloads_total{result="refused"}`) {
		t.Fatal("refusal not counted")
	}
}

// Policy as code: `sigil policy test` runs the policy's own Rego tests and
// fails when one fails.
func TestPolicyTestCommand(t *testing.T) {
	t.Parallel()
	out := harness.MustRun(t, "sigil", "policy", "test", "../demo/policy")
	if !strings.Contains(out, "2/2 passed") {
		t.Fatalf("demo policy tests: %s", out)
	}
	dir := t.TempDir()
	for _, f := range []string{"authz.rego", "authz_test.rego"} {
		b, err := os.ReadFile(filepath.Join("../demo/policy", f))
		if err != nil {
			t.Fatal(err)
		}
		// A reviewer's change that lets web POST breaks the second test.
		if f == "authz.rego" {
			b = []byte(strings.Replace(string(b), `input.request.method == "GET"`, `input.request.method in {"GET", "POST"}`, 1))
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	out, err := harness.Run(t, "sigil", "policy", "test", dir)
	if err == nil || !strings.Contains(out, "test_web_may_not_post: FAIL") {
		t.Fatalf("a policy that breaks its tests: %v\n%s", err, out)
	}
}
