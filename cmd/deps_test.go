// Package cmd_test guards what each binary links: the agent and (later) the
// proxy run on every node, so heavy or sensitive code stays out of them.
package cmd_test

import (
	"os/exec"
	"strings"
	"testing"
)

func deps(t *testing.T, pkg string) map[string]bool {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	set := map[string]bool{}
	for _, line := range strings.Fields(string(out)) {
		set[line] = true
	}
	return set
}

func TestBinaryDependencies(t *testing.T) {
	tests := []struct {
		binary    string
		forbidden []string
	}{
		// The agent never signs and never stores: no CA, no KMS, no SQLite,
		// no Kubernetes client.
		{"github.com/sigil-mesh/sigil/cmd/sigil-agent", []string{
			"github.com/sigil-mesh/sigil/ca",
			"github.com/sigil-mesh/sigil/registry",
			"github.com/sigil-mesh/sigil/server",
			"go.step.sm/crypto/kms",
			"modernc.org/sqlite",
			"k8s.io/client-go/kubernetes",
			// It checks names (naming), never Istio resources: no traffic
			// package and no YAML.
			"github.com/sigil-mesh/sigil/traffic",
			"sigs.k8s.io/yaml",
		}},
		// The proxy runs beside every workload: no Kubernetes client and none
		// of the server's CA, signing or storage code.
		{"github.com/sigil-mesh/sigil/cmd/sigil-proxy", []string{
			"github.com/sigil-mesh/sigil/ca",
			"github.com/sigil-mesh/sigil/registry",
			"github.com/sigil-mesh/sigil/server",
			"go.step.sm/crypto",
			"github.com/smallstep/certificates",
			"modernc.org/sqlite",
			"k8s.io/client-go",
		}},
	}
	// A control: the server does link the CA, so the listing is real.
	if !deps(t, "github.com/sigil-mesh/sigil/cmd/sigil-server")["github.com/sigil-mesh/sigil/ca"] {
		t.Fatal("go list found no CA in sigil-server; the guard would pass vacuously")
	}
	for _, tt := range tests {
		got := deps(t, tt.binary)
		if len(got) == 0 {
			t.Fatalf("%s: no dependencies listed", tt.binary)
		}
		for _, f := range tt.forbidden {
			for dep := range got {
				if dep == f || strings.HasPrefix(dep, f+"/") {
					t.Errorf("%s links %s (via %s)", tt.binary, f, dep)
				}
			}
		}
	}
}
