package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"golang.org/x/net/websocket"
)

// eventLoopPolicy lets web GET and POST to api, but not POST /denied.
const eventLoopPolicy = `package sigil.authz

default allow := false

allow if {
	input.source.principal == "spiffe://example.org/ns/default/sa/web"
	input.destination.service == "api"
	input.request.method in {"GET", "POST"}
	input.request.url_path != "/denied"
}
`

// eventLoopPolicyDir writes eventLoopPolicy into a directory of m's and
// returns it, for --policy.
func eventLoopPolicyDir(t *testing.T, m *harness.Mesh) string {
	t.Helper()
	return policyDir(t, m, "loop-policy", eventLoopPolicy)
}

// policyDir writes src as authz.rego into m's directory name and
// returns it, for --policy.
func policyDir(t *testing.T, m *harness.Mesh, name, src string) string {
	t.Helper()
	dir := filepath.Join(m.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestInboundEventLoop runs the callee's sidecar with
// --inbound-event-loop and a real caller sidecar, curl and a WebSocket
// client in front: requests and bodies both ways (Content-Length and
// chunked), the caller's identity in XFCC and a forged one dropped, a
// denied POST whose body is dropped while the connection goes on, the
// decision, access log and metrics of every request, a WebSocket handed
// back to the goroutine path, the loop's connection gauge, and a drain
// on SIGTERM that lets a slow request finish. The whole e2e suite runs
// the same way with `make e2e-event-loop`.
func TestInboundEventLoop(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	m := ids.m
	dir := eventLoopPolicyDir(t, m)
	app, apiApp := harness.StartApp(t, "api")
	_, webApp := harness.StartApp(t, "web")
	api := harness.StartProxy(t, ids.api, "api", apiApp, dir, "--inbound-event-loop", "--drain-grace", "0s",
		"--access-log", filepath.Join(m.Dir, "api-access.log"), "--decision-log", filepath.Join(m.Dir, "api-decisions.log"))
	web := harness.StartProxy(t, ids.web, "web", webApp, dir, "--upstream", "api="+api.Inbound+"@"+apiSA)
	proxy := "http://" + web.Outbound

	reply := func(args ...string) appReply {
		t.Helper()
		code, body := curl(t, append([]string{"-x", proxy}, args...)...)
		if code != 200 {
			t.Fatalf("curl %v: %d %s", args, code, body)
		}
		var r appReply
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		return r
	}
	r := reply("-H", "X-Forwarded-Client-Cert: URI=spiffe://example.org/ns/evil/sa/evil", "-H", "X-Forwarded-Client_Cert: evil", "http://api/hello?x=1")
	if r.Caller != webSA || !strings.HasPrefix(r.Headers["X-Forwarded-Client-Cert"], "By="+apiSA+";Hash=") || strings.Contains(fmt.Sprint(r.Headers), "evil") {
		t.Fatalf("app saw %+v", r)
	}
	if n := metricValue(t, api.Admin, `sigil_event_loop_connections\{listener="inbound"\} (\S+)`); n < 1 {
		t.Fatalf("sigil_event_loop_connections %v: the caller's pooled connection is not on the loop", n)
	}
	for i, body := range []string{"", "a small body", strings.Repeat("0123456789", 20000)} {
		file := filepath.Join(t.TempDir(), fmt.Sprint("body", i)) // curl's argv would not hold 200 KB
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		r := reply("-X", "POST", "--data-binary", "@"+file, "http://api/echo")
		if r.Method != "POST" || r.Body != body {
			t.Fatalf("POST of %d bytes: app saw %s with %d bytes", len(body), r.Method, len(r.Body))
		}
	}
	// Chunked from the caller's app: the caller's sidecar forwards it
	// chunked or with a length; either way the body arrives whole.
	if r := reply("-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", "chunked body", "http://api/echo"); r.Body != "chunked body" {
		t.Fatalf("chunked POST: app saw %q", r.Body)
	}
	// A denied POST's body is read and dropped on the callee; the next
	// request on the caller's pooled connection is still served.
	for range 3 {
		if code, body := curl(t, "-x", proxy, "-X", "POST", "--data-binary", strings.Repeat("x", 5000), "http://api/denied"); code != 403 || !strings.Contains(body, "RBAC: access denied") {
			t.Fatalf("denied POST: %d %s", code, body)
		}
		if r := reply("http://api/after-denied"); r.Path != "/after-denied" {
			t.Fatalf("after a denied POST: %+v", r)
		}
	}
	// A WebSocket goes back to the goroutine path for its connection.
	wsCfg, _ := websocket.NewConfig("ws://api/ws", "http://web/")
	conn, err := websocketViaProxy(wsCfg, web.Outbound)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	websocket.Message.Send(conn, "over the event loop's handoff")
	var echo string
	if err := websocket.Message.Receive(conn, &echo); err != nil || echo != "over the event loop's handoff" {
		t.Fatalf("websocket echo %q %v", echo, err)
	}
	conn.Close()

	for _, code := range []string{"200", "403"} {
		inbound := map[string]string{"reporter": "destination", "destination_service_name": "api", "request_protocol": "http", "source_principal": webSA, "response_code": code}
		if sumSeries(t, api.Admin, "sigil_requests_total", inbound) == 0 {
			t.Errorf("no sigil_requests_total%v", inbound)
		}
	}

	// Drain: a request in flight when SIGTERM comes finishes.
	drainsInFlight(t, app, api, proxy)
	decisions, _ := os.ReadFile(filepath.Join(m.Dir, "api-decisions.log"))
	access, _ := os.ReadFile(filepath.Join(m.Dir, "api-access.log"))
	if !strings.Contains(string(decisions), `"result":false`) || !strings.Contains(string(decisions), `"result":true`) {
		t.Fatalf("decision log: %s", decisions)
	}
	for _, want := range []string{`"status":403`, `"path":"/after-denied"`, `"path":"/slow"`, `"source":"` + webSA + `"`} {
		if !strings.Contains(string(access), want) {
			t.Fatalf("access log lacks %s: %s", want, access)
		}
	}
}
