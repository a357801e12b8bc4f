package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// `sigil policy diff` on the decision log a real sidecar wrote for real
// traffic: a proposed policy that blocks GET /items is found to block
// exactly that request class (its query strings folded in), with its
// count, and fails the command unless --allow-tightening.
func TestPolicyDiffReplaysSidecarDecisionLog(t *testing.T) {
	mp := startMeshWithProxies(t)
	for _, r := range []struct {
		method, path string
		times, code  int
	}{
		{"GET", "/items", 2, 200},
		{"GET", "/items?page=2", 1, 200},
		{"GET", "/other", 2, 200},
		{"POST", "/items", 1, 403},
	} {
		for range r.times {
			if code, body := curl(t, "-x", "http://"+mp.web.Outbound, "-X", r.method, "http://api"+r.path); code != r.code {
				t.Fatalf("%s %s: %d, want %d: %s", r.method, r.path, code, r.code, body)
			}
		}
	}
	mp.api.Stop() // flushes the decision log
	log := filepath.Join(mp.m.Dir, "api-decisions.log")

	proposed := filepath.Join(mp.m.Dir, "proposed")
	os.MkdirAll(proposed, 0o755)
	src := strings.Replace(webToAPIPolicy, `	input.request.method == "GET"
`, `	input.request.method == "GET"
	input.request.url_path != "/items"
`, 1)
	if src == webToAPIPolicy {
		t.Fatal("the proposed policy is the base")
	}
	if err := os.WriteFile(filepath.Join(proposed, "authz.rego"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"policy", "diff", "--base", mp.policyDir, "--proposed", proposed, "--replay", log, "--format", "markdown"}
	out, err := harness.Run(t, "sigil", args...)
	t.Logf("sigil policy diff:\n%s", out)
	if err == nil || !strings.Contains(err.Error(), "exit status 1") || !strings.Contains(err.Error(), "the proposed policy denies 3 recorded decisions the base allows (request classes: 1)") {
		t.Fatalf("a tightening: %v, want exit status 1 and why", err)
	}
	for _, want := range []string{
		"6 decisions replayed: 3 unchanged, 3 changed (3 allow → deny, 0 deny → allow)",
		"| allow → deny | 3 | `" + webSA + "` | `api (" + apiSA + ")` | `GET` | `/items` |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Count(out, "| allow → deny |")+strings.Count(out, "| deny → allow |") != 1 {
		t.Errorf("more than the one request class changed:\n%s", out)
	}
	if out, err := harness.Run(t, "sigil", append(args, "--allow-tightening")...); err != nil {
		t.Fatalf("--allow-tightening: %v\n%s", err, out)
	}
}
