package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// `sigil apply --dry-run --review` through the real binaries: after
// traffic from web to api (all on v1), a canary weight shift and a header
// removal are both named in the markdown with the share of that traffic
// they touch, read from the server's stats; and nothing is applied.
func TestApplyDryRunReviewNamesWireChangesWithTrafficShare(t *testing.T) {
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"})
	tm.apply(t, subsetsDR+"---\n"+splitVS(100, 0))
	if by, failed := count(tm.load(60, 4, "/", nil)); failed > 0 || by["api-v1"] != 60 {
		t.Fatalf("traffic before the review: %v, %d failed; want 60 on api-v1", by, failed)
	}
	waitStatRows(t, tm.ids.m, "route")
	waitStatRows(t, tm.ids.m, "subset")

	canary := strings.Replace(splitVS(90, 10), "  - route:\n", "  - headers:\n      request:\n        remove: [x-debug]\n    route:\n", 1)
	path := filepath.Join(tm.ids.m.Dir, "canary.yaml")
	if err := os.WriteFile(path, []byte(canary), 0o644); err != nil {
		t.Fatal(err)
	}
	out := harness.MustRun(t, "sigil", "apply", "--dry-run", "--review", "-f", path, "--admin-socket", adminv1.AdminSocket(tm.ids.m.DataDir))
	t.Logf("sigil apply --dry-run --review:\n%s", out)
	var weights, header string
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(l, "| weights: api/v1 100 → 90, api/v2 0 → 10 |"):
			weights = l
		case strings.Contains(l, "| request header x-debug removed |"):
			header = l
		}
	}
	if weights == "" || header == "" {
		t.Fatalf("the review does not name both changes:\n%s", out)
	}
	for _, l := range []string{weights, header} {
		if !strings.Contains(l, "| VirtualService default/api | `http[0]` |") || !strings.Contains(l, "100.0 % (") || strings.Contains(l, "no live traffic data") || strings.Contains(l, "(0 of") {
			t.Errorf("row without a non-zero share of live traffic: %s", l)
		}
	}
	if !strings.Contains(weights, "requests per subset now: api/v1 ") || strings.Contains(weights, "api/v1 0,") {
		t.Errorf("weight row without v1's live requests: %s", weights)
	}
	if !strings.Contains(out, "dry run: nothing applied") || !strings.Contains(out, "virtualservice.networking.istio.io/api configured") {
		t.Errorf("no dry-run heading or resource list:\n%s", out)
	}

	// Nothing was applied.
	if w := apiWeights(t, tm); w["v1"] != 100 || w["v2"] != 0 {
		t.Fatalf("weights after the dry run %v, want v1 100, v2 0", w)
	}
	vss, err := tm.admin().ListConfig(t.Context(), "virtualservices")
	if err != nil {
		t.Fatal(err)
	}
	for _, vs := range vss {
		if strings.Contains(string(vs.Spec), "x-debug") {
			t.Fatalf("the dry run stored the header removal: %s", vs.Spec)
		}
	}
	if _, err := harness.Run(t, "sigil", "apply", "--review", "-f", path, "--admin-socket", adminv1.AdminSocket(tm.ids.m.DataDir)); err == nil {
		t.Fatal("--review without --dry-run was accepted")
	}
}
