package hop

import (
	"os/exec"
	"strings"
	"testing"
)

// hop is a leaf of the proxy: what both sides share. It names protocols
// through package protocol and must not pull in the policy engine (OPA)
// that only the callee's decision needs.
func TestHopImportsNoPolicy(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	found := false
	for _, d := range deps {
		switch d {
		case "github.com/sigil-mesh/sigil/policy":
			t.Errorf("proxy/hop imports %s", d)
		case "github.com/sigil-mesh/sigil/protocol":
			found = true
		}
	}
	if !found {
		t.Error("proxy/hop does not import package protocol: the guard would pass vacuously")
	}
}
