package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// The policy engine's hooks are set when it is built, so the sidecar's
// first policy load is counted in sigil_policy_reloads_total like every
// later one (it once was not: the hook was set after the load).
func TestPolicyHooksAtConstructionCountFirstLoad(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	m.Entry("node1", apiSA, "--selector", "unix:uid:"+myUID)
	agent := m.StartAgent("node1")
	_, app := harness.StartApp(t, "api")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(webToAPIPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	api := harness.StartProxy(t, agent, "api", app, dir)
	metrics := httpGet(t, "http://"+api.Admin+"/metrics")
	if want := `sigil_policy_reloads_total{result="ok"} 1`; !strings.Contains(metrics, want) {
		t.Fatalf("the first policy load is not counted: want %q in\n%s", want, grepLines(metrics, "sigil_policy_reloads_total"))
	}
}
