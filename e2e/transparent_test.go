package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// Transparent mode: in a client namespace whose outbound TCP iptables
// redirects to the sidecar, a plain `curl http://<api-ip>:8080/` (run as
// another uid, so it is captured) reaches the api app through both
// sidecars over mTLS, under the policy.
func TestTransparentMode(t *testing.T) {
	t.Parallel()
	clientNS, serverNS, clientIP, serverIP := harness.NetnsPair(t)
	ids := startIdentities(t)

	harness.StartIn(t, serverNS, "sigil-demo-app", "--listen", "127.0.0.1:8080", "--name", "api").WaitFor(`listening on`, 30*time.Second)
	api := harness.StartIn(t, serverNS, "sigil-proxy", "run", "--socket", ids.api.Socket, "--service", "api", "--app", "127.0.0.1:8080",
		"--inbound", serverIP+":15006", "--outbound", "127.0.0.1:15001", "--admin", "127.0.0.1:15000", "--policy", ids.policyDir, "--audit-spool-dir", t.TempDir())
	api.WaitFor(`sigil-proxy running`, 60*time.Second)
	web := harness.StartIn(t, clientNS, "sigil-proxy", "run", "--socket", ids.web.Socket, "--service", "web", "--app", "127.0.0.1:8080",
		"--inbound", clientIP+":15006", "--outbound", "127.0.0.1:15001", "--admin", "127.0.0.1:15000", "--policy", ids.policyDir, "--audit-spool-dir", t.TempDir(),
		"--transparent", "--upstream", "api="+serverIP+":15006@"+apiSA)
	web.WaitFor(`sigil-proxy running`, 60*time.Second)

	// Istio-style capture, excluding the sidecar's own uid (0 here).
	if out, err := exec.Command("ip", "netns", "exec", clientNS, harness.Bin("sigil-proxy"), "iptables", "--proxy-uid", "0").CombinedOutput(); err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}
	curlAs := func(args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", clientNS, "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
			"curl", "-sS", "-m", "20", "-w", "\n%{http_code}"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := curlAs("http://" + serverIP + ":8080/hello")
	if err != nil || !strings.HasSuffix(strings.TrimSpace(out), "200") {
		t.Fatalf("curl: %v: %s", err, out)
	}
	var r appReply
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "\n")]), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r.Service != "api" || r.Caller != webSA {
		t.Fatalf("app saw %+v", r)
	}
	// The policy holds on the transparent path too.
	if out, _ := curlAs("-X", "POST", "http://"+serverIP+":8080/hello"); !strings.HasSuffix(strings.TrimSpace(out), "403") {
		t.Fatalf("POST: %s", out)
	}
	// A destination that is no known service's host is refused, not passed
	// through (the sidecar model: any port of a workload's address goes to
	// that workload's sidecar; other addresses are not in the mesh).
	unknown := strings.TrimSuffix(serverIP, ".2") + ".9"
	if out, err := curlAs("http://" + unknown + ":8080/"); err == nil {
		t.Fatalf("unknown destination answered: %s", out)
	}
	web.WaitFor(`transparent connection to an unknown destination refused`, 10*time.Second)
	// Without the sidecar's uid exemption root's curl would loop; root is the
	// sidecar's uid here, so its traffic goes straight out and meets only
	// the mTLS inbound, which refuses plaintext.
	if out, err := exec.Command("ip", "netns", "exec", clientNS, "curl", "-sS", "-m", "10", "http://"+serverIP+":15006/").CombinedOutput(); err == nil {
		t.Fatalf("plaintext to the inbound port answered: %s", out)
	}
	transparentPortRoutes(t, ids, curlAs, serverIP)
}

// transparentPortRoutes: in transparent mode the port a request is for is
// the one the app dialled (the original destination's), whatever the Host
// says: match.port routes 8080 and 9090 of one service apart.
func transparentPortRoutes(t *testing.T, ids identities, curlAs func(...string) (string, error), serverIP string) {
	t.Helper()
	route := func(port string) string {
		return "  - match: [{port: " + port + "}]\n    headers: {response: {set: {x-route: port-" + port + "}}}\n    route: [{destination: {host: api}}]\n"
	}
	vs := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api-ports}\nspec:\n  hosts: [api]\n  http:\n" + route("8080") + route("9090")
	harness.MustRun(t, "sigil", "apply", "-f", writeFile(t, ids.m.Dir, vs), "--admin-socket", adminv1.AdminSocket(ids.m.DataDir))
	for _, port := range []string{"8080", "9090"} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			// Host names port 1: the original destination decides.
			out, err := curlAs("-D", "-", "-H", "Host: api:1", "http://"+serverIP+":"+port+"/hello")
			if err == nil && strings.Contains(strings.ToLower(out), "x-route: port-"+port) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("port %s: no x-route: port-%s in the answer: %v: %s", port, port, err, out)
			}
			time.Sleep(50 * time.Millisecond) // the sidecar's config version is not visible from the namespace; poll the answer
		}
	}
}
