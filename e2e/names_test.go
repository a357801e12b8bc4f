package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/server/registry"
)

const evilName = "\x1b]0;pwned\x07evil"

// noControls fails when text carries a terminal control character.
func noControls(t *testing.T, what, text string) {
	t.Helper()
	if i := strings.IndexFunc(text, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' || r == 0x7f || 0x80 <= r && r <= 0x9f }); i >= 0 {
		t.Errorf("%s carries control byte %q at %d: %q", what, text[i], i, text)
	}
}

func vsNamed(meta string) string {
	return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n" + meta +
		"spec:\n  hosts: [api]\n  http:\n  - route:\n    - destination: {host: api}\n"
}

// The real `sigil` against a real server: names that are not
// Kubernetes names are refused by the server with the resource, the field
// and the rule, whatever the CLI sends; a record stored before the rule
// existed is listed and deleted with its control characters escaped.
func TestResourceNameValidationCLI(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	sock := adminv1.AdminSocket(m.DataDir)
	sigil := func(args ...string) (string, error) {
		return harness.Run(t, "sigil", append(args, "--admin-socket", sock)...)
	}
	tests := []struct{ name, meta, want string }{
		{"path", "  name: ../../etc\n", `metadata.name "../../etc" must be a lowercase RFC 1123 subdomain`},
		{"slash", "  name: a/b\n", `metadata.name "a/b"`},
		{"newline", "  name: \"a\\nb\"\n", `metadata.name "a\nb"`},
		{"terminal title", "  name: \"\\e]0;pwned\\a\"\n", `metadata.name "\x1b]0;pwned\a"`},
		{"200 KB", "  name: " + strings.Repeat("a", 200<<10) + "\n", "(204800 bytes)"},
		{"namespace", "  name: api\n  namespace: ../kube-system\n", `metadata.namespace "../kube-system" must be a lowercase RFC 1123 label`},
	}
	for _, tt := range tests {
		path := filepath.Join(m.Dir, "bad-"+strings.ReplaceAll(tt.name, " ", "-")+".yaml")
		os.WriteFile(path, []byte(vsNamed(tt.meta)), 0o644)
		_, err := sigil("apply", "-f", path)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: apply: %v, want %q", tt.name, err, tt.want)
			continue
		}
		noControls(t, tt.name+": apply's error", err.Error())
		if len(err.Error()) > 4096 {
			t.Errorf("%s: a %d-byte error", tt.name, len(err.Error()))
		}
	}
	if _, err := sigil("delete", "virtualservice", "../../etc"); err == nil || !strings.Contains(err.Error(), "RFC 1123 subdomain") {
		t.Errorf("delete of a bad name: %v", err)
	}
	if out, _ := sigil("get", "virtualservices"); strings.Contains(out, "etc") {
		t.Fatalf("a refused resource was stored:\n%s", out)
	}

	// A record stored before names were checked, written straight to the
	// server's store while it is down.
	m.Server.Stop()
	store, err := registry.Open(t.Context(), m.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	spec := `{"hosts":["api"],"http":[{"route":[{"destination":{"host":"api"}}]}]}`
	if _, _, err := store.ApplyResources(t.Context(), []registry.StoredResource{{Kind: "VirtualService", Namespace: "default", Name: evilName, Spec: []byte(spec)}}, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	store.Close()
	m.StartServer()
	for _, format := range []string{"table", "json", "yaml"} {
		out, err := sigil("get", "virtualservices", "-o", format)
		if err != nil {
			t.Fatal(err)
		}
		noControls(t, "get -o "+format, out)
		if format == "table" && !strings.Contains(out, `\x1b]0;pwned\x07evil`) {
			t.Errorf("get shows %q, want the name escaped", out)
		}
	}
	out, err := sigil("delete", "virtualservice", evilName)
	if err != nil {
		t.Fatalf("a stored record with a bad name cannot be deleted: %v", err)
	}
	noControls(t, "delete's output", out)
}

// A file that is not UTF-8 is refused by name and byte offset, by apply
// and by delete -f alike, and nothing is stored.
func TestNonUTF8RefusedCLI(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	sock := adminv1.AdminSocket(m.DataDir)
	path := filepath.Join(m.Dir, "latin1.yaml")
	os.WriteFile(path, []byte(vsNamed("  name: caf\xe9\n")), 0o644)
	for _, cmd := range [][]string{{"apply", "-f", path}, {"delete", "-f", path}} {
		_, err := harness.Run(t, "sigil", append(cmd, "--admin-socket", sock)...)
		if err == nil || !strings.Contains(err.Error(), path+": line 4, byte offset 77: byte 0xe9 is not UTF-8") {
			t.Errorf("%s: %v", cmd[0], err)
		}
		if err != nil {
			noControls(t, cmd[0]+"'s error", err.Error())
		}
	}
	if out := harness.MustRun(t, "sigil", "get", "virtualservices", "--admin-socket", sock); strings.Contains(out, "caf") {
		t.Fatalf("stored anyway:\n%s", out)
	}
}

// `sigil policy check` refuses a policy with no allow rule and one whose
// modules conflict at every evaluation; a sidecar refuses the same policy
// when it appears, keeps the old one in force and counts the refusal.
func TestPolicyCheckRefusesCLI(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	write := func(dir, name, src string) {
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	noAllow := filepath.Join(ids.m.Dir, "no-allow")
	write(noAllow, "authz.rego", "package sigil.authz\n\npermit if input.request.method == \"GET\"\n")
	if _, err := harness.Run(t, "sigil", "policy", "check", noAllow); err == nil || !strings.Contains(err.Error(), "no rule named allow") {
		t.Errorf("check of a policy without allow: %v", err)
	}

	dir := filepath.Join(ids.m.Dir, "live-policy")
	write(dir, "authz.rego", webToAPIPolicy)
	_, appAddr := harness.StartApp(t, "api")
	api := harness.StartProxy(t, ids.api, "api", appAddr, dir)
	web := harness.StartProxy(t, ids.web, "web", appAddr, ids.policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA)
	if code, _ := curl(t, "-x", "http://"+web.Outbound, "http://api/"); code != 200 {
		t.Fatalf("good policy: %d", code)
	}
	write(dir, "zz-override.rego", "package sigil.authz\n\nallow := false\n")
	write(dir, "zz-override2.rego", "package sigil.authz\n\nallow := true\n")
	if _, err := harness.Run(t, "sigil", "policy", "check", dir); err == nil || !strings.Contains(err.Error(), "conflict") {
		t.Errorf("check of conflicting modules: %v", err)
	}
	api.WaitFor(`policy refused; the policy in force stays.*conflict`, 10*time.Second)
	if code, _ := curl(t, "-x", "http://"+web.Outbound, "http://api/"); code != 200 {
		t.Fatalf("after a conflicting policy: %d, want the old policy still in force", code)
	}
	if m := httpGet(t, "http://"+api.Admin+"/metrics"); !strings.Contains(m, `sigil_policy_reloads_total{result="refused"}`) {
		t.Fatal("refusal not counted")
	}
}
