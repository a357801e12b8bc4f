package e2e

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// curlAs runs curl as uid:gid with no supplementary groups (setpriv), and
// returns the HTTP status (0 when the connection failed) and output.
func curlAs(t *testing.T, uid string, args ...string) (int, string) {
	t.Helper()
	full := append([]string{"--reuid", uid, "--regid", uid, "--clear-groups", "curl", "-sS", "-m", "10", "-w", "\n%{http_code}"}, args...)
	out, _ := exec.Command("setpriv", full...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	i := strings.LastIndex(s, "\n")
	code, _ := strconv.Atoi(s[i+1:])
	return code, s
}

// With --app-uid, web's outbound port serves only the app's processes (as
// the kernel records the peer socket's owner): root and another local user
// are refused at accept, and counted; the app's uid is served.
func TestOutboundAcceptsOnlyAppUID(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed (.ci/run installs it)")
	}
	if uid := myUID; uid != "0" {
		t.Skip("needs root to run curl as other users")
	}
	ids := startIdentities(t)
	_, apiApp := harness.StartApp(t, "api")
	api := harness.StartProxy(t, ids.api, "api", apiApp, ids.policyDir)
	const appUID, otherUID = "65534", "65533"
	web := harness.StartProxy(t, ids.web, "web", "127.0.0.1:1", ids.policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA, "--app-uid", appUID)

	deadline := time.Now().Add(30 * time.Second)
	for {
		code, out := curlAs(t, appUID, "-x", "http://"+web.Outbound, "http://api/hello")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("app uid %s not served: %d %s", appUID, code, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, out := curlAs(t, otherUID, "-x", "http://"+web.Outbound, "http://api/hello"); code != 0 {
		t.Errorf("uid %s served: %d %s", otherUID, code, out)
	}
	if code, body, _ := runCurl("-x", "http://"+web.Outbound, "http://api/hello"); code != 0 {
		t.Errorf("root served: %d %s", code, body)
	}
	if n := metricValue(t, web.Admin, `^sigil_listener_connections_refused_total\{listener="outbound",reason="peer_uid"\}`); n != 2 {
		t.Errorf("refused for peer uid: %v, want 2", n)
	}
	if strings.Contains(web.Output(), "takes connections from any local user") {
		t.Error("warned about any local user though --app-uid is set")
	}
}
