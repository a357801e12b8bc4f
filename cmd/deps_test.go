// Package cmd_test guards what each binary links (Tailscale's deptest): the
// agent and the proxy run on every node and the CLI on laptops, so heavy or
// sensitive code stays out of them. Each rule says why; a rule that could
// never fire (its module is in no go.mod, or nothing links its package)
// fails too, so the guard cannot pass vacuously.
package cmd_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/sigil-mesh/sigil"

// forbidden maps each binary to the packages it must not link (a path
// forbids the package and every package under it; a module path, the
// whole module) and the reason printed when it does.
//
// sigs.k8s.io/yaml is no longer forbidden in the agent: on Kubernetes it
// reads a kubeconfig through client-go (its pod informer), which is YAML;
// the rule on the traffic package still keeps Istio resources out.
// github.com/smallstep/certificates (once forbidden in the proxy) is
// dropped for the same reason: the CA signs with go.step.sm/crypto, which
// the proxy's rule covers.
var forbidden = map[string]map[string]string{
	mod + "/cmd/sigil": {
		"modernc.org/sqlite":     "the laptop CLI must not carry the server's store: it talks to the server through api/admin/v1",
		"go.step.sm/crypto/kms":  "the laptop CLI never touches the CA's keys: key management is the server's alone",
		mod + "/ca":              "the laptop CLI must not carry the CA: signing happens in sigil-server only",
		mod + "/server":          "the laptop CLI links the admin API's wire types and client (api/admin/v1), not the daemon",
		mod + "/server/registry": "the laptop CLI must not carry the server's store: wire types live in api/admin/v1",
	},
	mod + "/cmd/sigil-agent": {
		mod + "/ca":              "the agent never signs: a node holding the CA's code is one step from holding its keys",
		mod + "/server":          "the agent runs on every node: none of the server's daemon belongs there",
		mod + "/server/registry": "the agent never stores registrations: entries come from the server's stream",
		"go.step.sm/crypto/kms":  "the agent never holds a signing key in a KMS: it has only its own SVID key",
		"modernc.org/sqlite":     "the agent keeps no database: its state is a few files in its data dir",
		mod + "/traffic":         "the agent checks names (naming), never Istio resources: the traffic package brings the Istio schema",
	},
	mod + "/cmd/sigil-server": {
		mod + "/proxy":       "the control plane carries no requests: the data plane's code stays out of the binary that holds the CA",
		mod + "/agent":       "the server is no node agent: it signs for agents, it does not attest workloads",
		mod + "/agent/cache": "the server is no node agent: workload SVIDs are cached on nodes, not beside the CA",
	},
	mod + "/cmd/sigil-proxy": {
		mod + "/ca":               "the proxy runs beside every workload: no CA or signing code there",
		mod + "/server":           "the proxy runs beside every workload: none of the server's daemon belongs there",
		mod + "/server/registry":  "the proxy keeps no registry: it learns config and endpoints from its agent",
		"go.step.sm/crypto":       "the proxy signs nothing: the CA's crypto module (and its KMS back ends) stay in the server",
		"modernc.org/sqlite":      "the proxy keeps no database: a sidecar's memory and start-up time are paid per workload",
		"k8s.io/client-go":        "the proxy runs beside every workload and never talks to the API server: its agent does (DESIGN.md)",
		mod + "/gatewayapi":       "the proxy reads VirtualServices only: sigil-server turns Gateway API routes into them",
		"sigs.k8s.io/gateway-api": "the proxy reads VirtualServices only: the Gateway API types (and apimachinery) stay in the server",
		mod + "/k8s":              "the proxy runs beside every workload: the Kubernetes watchers (k8s/...) are the server's",
	},
}

// goList runs go with args and returns its output's lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	return strings.Fields(string(out))
}

// under reports whether pkg is path or a package under it.
func under(pkg, path string) bool { return pkg == path || strings.HasPrefix(pkg, path+"/") }

func TestBinaryDependencies(t *testing.T) {
	modules := map[string]bool{}
	for _, m := range goList(t, "list", "-m", "-f", "{{.Path}}", "all") {
		modules[m] = true
	}
	binaries := goList(t, "list", "./...")
	binaries = slices.DeleteFunc(binaries, func(p string) bool { return !strings.HasPrefix(p, mod+"/cmd/sigil") })
	deps := map[string][]string{}
	for _, b := range binaries {
		deps[b] = goList(t, "list", "-deps", b)
		if len(deps[b]) == 0 {
			t.Fatalf("%s: no dependencies listed", b)
		}
	}
	for _, b := range binaries {
		if _, ok := forbidden[b]; !ok {
			t.Errorf("%s: a binary with no rules here; say what it must not link, and why", b)
		}
	}
	for binary, rules := range forbidden {
		got, ok := deps[binary]
		if !ok {
			t.Errorf("%s: no such binary under cmd/; its rules guard nothing", binary)
			continue
		}
		for path, reason := range rules {
			// The rule must be able to fire: its module is in the graph
			// and some binary of ours links the path.
			inGraph := false
			for m := range modules {
				if under(path, m) {
					inGraph = true
				}
			}
			if !inGraph {
				t.Errorf("rule %s for %s: no module of the graph (go list -m all) holds it; the rule can never fail", path, binary)
			}
			linked := false
			for _, ds := range deps {
				linked = linked || slices.ContainsFunc(ds, func(d string) bool { return under(d, path) })
			}
			if !linked {
				t.Errorf("rule %s for %s: no binary under cmd/ links it; the rule can never fail (renamed or moved?)", path, binary)
			}
			for _, dep := range got {
				if under(dep, path) {
					t.Errorf("%s links %s (package %s; `go list -deps -f '{{.ImportPath}}: {{.Imports}}' %s` shows who imports it): %s", binary, path, dep, binary, reason)
					break
				}
			}
		}
	}
}
