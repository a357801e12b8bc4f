package deploy

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/server"
)

// helpFlag is a flag's name in a cobra --help text.
var helpFlag = regexp.MustCompile(`(?m)^\s+(?:-[a-zA-Z], )?--([a-z0-9][a-z0-9-]*)`)

// TestManifestFlagsExist builds sigil-server and sigil-agent and checks
// that every flag the manifests pass them is one `run --help` lists: a
// manifest naming a flag the binary lacks would crash-loop on every node.
// It names every missing flag at once (flags other parts add, such as
// --webhook-bind, fail here until their branch is merged).
func TestManifestFlagsExist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/sigil-mesh/sigil/cmd/sigil-server", "github.com/sigil-mesh/sigil/cmd/sigil-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	used := map[string]bool{}
	for _, o := range render(t, Params{TrustDomain: "example.org"}) {
		if o.Kind() != "Deployment" && o.Kind() != "DaemonSet" {
			continue
		}
		for _, list := range []string{"initContainers", "containers"} {
			containers, _ := get(o, "spec", "template", "spec", list).([]any)
			for i := range containers {
				command := stringsOf(get(containers, i, "command"))
				args := stringsOf(get(containers, i, "args"))
				if len(command) != 1 || len(args) == 0 {
					t.Fatalf("%s %s container %d: command %q args %q; want one binary and its subcommand first", o.Kind(), o.Name(), i, command, args)
				}
				bin, sub := command[0], args[0]
				help, err := exec.Command(filepath.Join(dir, bin), sub, "--help").CombinedOutput()
				if err != nil {
					t.Fatalf("%s %s --help: %v\n%s", bin, sub, err, help)
				}
				var known []string
				for _, m := range helpFlag.FindAllStringSubmatch(string(help), -1) {
					known = append(known, m[1])
				}
				var missing []string
				for _, a := range args[1:] {
					name, ok := strings.CutPrefix(a, "--")
					if !ok {
						t.Errorf("%s %s: argument %q is not a --flag", o.Kind(), o.Name(), a)
						continue
					}
					name, _, _ = strings.Cut(name, "=")
					used[bin+" --"+name] = true
					if !slices.Contains(known, name) {
						missing = append(missing, "--"+name)
					}
				}
				if len(missing) > 0 {
					t.Errorf("%s %s runs `%s %s` with flags it does not accept: %s (not merged yet, or renamed: fix the manifest in deploy/kubernetes)", o.Kind(), o.Name(), bin, sub, strings.Join(missing, " "))
				}
			}
		}
	}
	if !used["sigil-server --trust-domain"] || !used["sigil-agent --node-name"] {
		t.Fatalf("flags seen: %v; want the server's and the agent's", used)
	}
}

// TestDefaultsMatchDaemons keeps the install's defaults the daemons' own,
// so a flag left out of the manifests means the same thing.
func TestDefaultsMatchDaemons(t *testing.T) {
	if DefaultNamespace != kube.DefaultNamespace {
		t.Errorf("DefaultNamespace %q, the daemons' %q", DefaultNamespace, kube.DefaultNamespace)
	}
	if DefaultCluster != server.DefaultK8sCluster {
		t.Errorf("DefaultCluster %q, the server's %q", DefaultCluster, server.DefaultK8sCluster)
	}
}
