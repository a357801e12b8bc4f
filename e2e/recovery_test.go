package e2e

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// getStatus returns an HTTP GET's status code and body.
func getStatus(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitStatus polls u (there is no push signal for a readiness endpoint)
// until it answers code, and returns the body.
func waitStatus(t *testing.T, u string, code int, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		got, body := getStatus(t, u)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %q after %s, want %d", u, got, body, timeout, code)
		}
		<-tick.C
	}
}

// metric returns the value of one series in a Prometheus text page.
func metric(t *testing.T, page, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no %s in metrics", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A server outage longer than the agent SVID's life: the agent warns
// before its SVID expires, says loudly when it has (log, /ready, metrics,
// `agent list`), the sidecar turns not ready with the reason, and the
// Workload API answers at once instead of hanging. A new join token in
// the agent's --join-token-file brings the node back without restarting
// the agent, within seconds.
func TestAgentRecoversAfterLongOutage(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t, "--agent-x509-ttl", "10s", "--default-x509-ttl", "10s")
	m.Entry("node1", webID().String(), "--selector", "unix:uid:"+myUID)
	a := m.StartAgent("node1")
	policyDir := filepath.Join(m.Dir, "policy")
	os.MkdirAll(policyDir, 0o755)
	os.WriteFile(filepath.Join(policyDir, "authz.rego"), []byte("package sigil.authz\n\ndefault allow := false\n"), 0o644)
	_, appAddr := harness.StartApp(t, "web")
	px := harness.StartProxy(t, a, "web", appAddr, policyDir)
	waitStatus(t, "http://"+px.Admin+"/ready", http.StatusOK, 30*time.Second)

	m.Server.Stop()
	a.WaitFor(`"level":"WARN","msg":"agent svid renewal overdue`, 20*time.Second)
	a.WaitFor(`"level":"ERROR","msg":"agent cannot renew its identity: agent svid expired`, 20*time.Second)

	code, body := getStatus(t, "http://"+a.Admin+"/ready")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "expired") {
		t.Fatalf("agent /ready with an expired SVID: %d %q", code, body)
	}
	_, page := getStatus(t, "http://"+a.Admin+"/metrics")
	if v := metric(t, page, "sigil_agent_svid_expiry_seconds"); v >= 0 {
		t.Fatalf("sigil_agent_svid_expiry_seconds = %v, want negative", v)
	}
	if v := metric(t, page, `sigil_agent_state{state="expired"}`); v != 1 {
		t.Fatalf(`sigil_agent_state{state="expired"} = %v`, v)
	}
	body = waitStatus(t, "http://"+px.Admin+"/ready", http.StatusServiceUnavailable, 20*time.Second)
	if !strings.Contains(body, "svid expired at") {
		t.Fatalf("sidecar /ready body %q does not say the SVID expired", body)
	}

	// The Workload API answers at once, with the reason, not at the deadline.
	start := time.Now()
	out, err := harness.Run(t, "sigil-agent", "api", "fetch", "x509", "--socket", a.Socket, "--timeout", "20s")
	if err == nil {
		t.Fatalf("fetch with an expired agent SVID succeeded: %s", out)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("fetch took %s to fail; it must not wait for its deadline", took)
	}
	if !strings.Contains(err.Error(), "Unavailable") || !strings.Contains(err.Error(), "re-attest") {
		t.Fatalf("fetch error does not say why: %v", err)
	}

	m.StartServer()
	if list := m.Admin("agent", "list"); !strings.Contains(list, "state=expired") {
		t.Fatalf("agent list does not show the expired agent: %q", list)
	}
	dropped := time.Now()
	m.TokenFile("node1", a.TokenFile)
	a.WaitFor(`"msg":"node re-attested"`, 15*time.Second)
	waitStatus(t, "http://"+px.Admin+"/ready", http.StatusOK, 15*time.Second)
	if took := time.Since(dropped); took > 10*time.Second {
		t.Fatalf("the node took %s to recover after the new token", took)
	}
	if out := harness.MustRun(t, "sigil-agent", "api", "fetch", "x509", "--socket", a.Socket, "--timeout", "10s"); !strings.Contains(out, webID().String()) {
		t.Fatalf("fetch after recovery: %s", out)
	}
	if code, body := getStatus(t, "http://"+a.Admin+"/ready"); code != http.StatusOK {
		t.Fatalf("agent /ready after recovery: %d %q", code, body)
	}
	if list := m.Admin("agent", "list"); !strings.Contains(list, "state=active") {
		t.Fatalf("agent list after recovery: %q", list)
	}
	if n := strings.Count(a.Output(), `"msg":"sigil-agent running"`); n != 1 {
		t.Fatalf("the agent started %d times; it must recover in process", n)
	}
}
