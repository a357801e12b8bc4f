package traffic

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"strings"
	"testing"
)

const policyHead = "apiVersion: security.sigil.dev/v1\nkind: Policy\nmetadata:\n  name: authz\n  namespace: prod\n"

// A Policy is read as strictly as every resource: unknown and mis-cased
// fields, a bad mode, module names and selector labels are refused,
// naming the field.
func TestPolicyResourceStrictReading(t *testing.T) {
	tests := []struct {
		name, doc, wantErr string
	}{
		{"minimal", policyHead + "spec:\n  modules:\n    authz.rego: 'package sigil.authz'\n", ""},
		{"dryrun with selector", policyHead + "spec:\n  mode: dryrun\n  selector:\n    matchLabels: {app: api}\n  modules:\n    a.rego: x\n    a_test.rego: z\n", ""},
		{"unknown field", policyHead + "spec:\n  modes: enforce\n  modules: {a.rego: x}\n", `field "modes" is not supported`},
		{"mis-cased field", policyHead + "spec:\n  Modules: {a.rego: x}\n", `did you mean "modules"`},
		{"mis-cased selector", policyHead + "spec:\n  selector: {matchlabels: {a: b}}\n  modules: {a.rego: x}\n", `did you mean "matchLabels"`},
		{"bad mode", policyHead + "spec:\n  mode: audit\n  modules: {a.rego: x}\n", `spec.mode: "audit": want enforce or dryrun`},
		{"no modules", policyHead + "spec: {}\n", "spec.modules: no policy module"},
		{"tests only", policyHead + "spec:\n  modules: {a_test.rego: x}\n", "spec.modules: no policy module"},
		{"module path", policyHead + "spec:\n  modules: {../a.rego: x}\n", `module name "../a.rego"`},
		{"not rego", policyHead + "spec:\n  modules: {a.txt: x}\n", `module name "a.txt"`},
		{"bad label", policyHead + "spec:\n  selector: {matchLabels: {'a b': c}}\n  modules: {a.rego: x}\n", "spec.selector.matchLabels"},
		{"policy kind, istio group", "apiVersion: networking.istio.io/v1\nkind: Policy\nmetadata: {name: a}\nspec: {}\n", "Policy is of security.sigil.dev/v1"},
		{"sigil group, other kind", "apiVersion: security.sigil.dev/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: {}\n", "has kind Policy only"},
		{"unknown top-level", policyHead + "spac: {}\n", `field "spac"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Parse([]byte(tt.doc), "p.yaml")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(rs) != 1 || rs[0].Policy == nil || rs[0].Policy.Spec.Mode == "" {
					t.Fatalf("parsed %+v", rs)
				}
				// What is stored reads back the same (the sidecar's path).
				spec, err := rs[0].Spec()
				if err != nil {
					t.Fatal(err)
				}
				back, err := FromSpec(KindPolicy, rs[0].Namespace, rs[0].Name, spec)
				if err != nil || back.Policy.Spec.Mode != rs[0].Policy.Spec.Mode || len(back.Policy.Spec.Modules) != len(rs[0].Policy.Spec.Modules) {
					t.Fatalf("FromSpec(%s): %+v, %v", spec, back.Policy, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func pol(ns, name, mode string, sel map[string]string) Resource {
	p := &Policy{Spec: PolicySpec{Mode: mode, Modules: map[string]string{"a.rego": "x"}}}
	if sel != nil {
		p.Spec.Selector = &WorkloadSelector{MatchLabels: sel}
	}
	return Resource{Kind: KindPolicy, Namespace: ns, Name: name, Policy: p}
}

// The policy that applies to a sidecar: its namespace's, the one whose
// selector matches first; the root namespace's where its own has none of
// that mode.
func TestPolicyResourceScopeSelection(t *testing.T) {
	all := []Resource{
		pol("prod", "ns-wide", PolicyModeEnforce, nil),
		pol("prod", "api-only", PolicyModeEnforce, map[string]string{"app": "api"}),
		pol("prod", "watch", PolicyModeDryRun, nil),
		pol(RootNamespace, "mesh", PolicyModeEnforce, nil),
		pol(RootNamespace, "mesh-dry-db", PolicyModeDryRun, map[string]string{"app": "db"}),
	}
	tests := []struct {
		mode, ns string
		labels   map[string]string
		want     string
	}{
		{PolicyModeEnforce, "prod", map[string]string{"app": "api", "version": "v1"}, "api-only"},
		{PolicyModeEnforce, "prod", map[string]string{"app": "web"}, "ns-wide"},
		{PolicyModeEnforce, "dev", map[string]string{"app": "api"}, "mesh"},
		{PolicyModeDryRun, "prod", map[string]string{"app": "db"}, "watch"},
		{PolicyModeDryRun, "dev", map[string]string{"app": "db"}, "mesh-dry-db"},
		{PolicyModeDryRun, "dev", map[string]string{"app": "web"}, ""},
	}
	for _, tt := range tests {
		got := ""
		if r := PolicyFor(all, tt.mode, "", tt.ns, tt.labels); r != nil {
			got = r.Name
		}
		if got != tt.want {
			t.Errorf("%s policy for %s %v: %q, want %q", tt.mode, tt.ns, tt.labels, got, tt.want)
		}
	}
}

// Two policies of one namespace and mode that may select one workload
// are refused, naming both; different modes, namespaces or disjoint
// selectors are fine.
func TestPolicyResourceScopeConflicts(t *testing.T) {
	tests := []struct {
		name    string
		rs      []Resource
		wantErr string
	}{
		{"two namespace-wide", []Resource{pol("prod", "a", PolicyModeEnforce, nil), pol("prod", "b", PolicyModeEnforce, nil)}, "Policy prod/a and Policy prod/b"},
		{"overlapping selectors", []Resource{pol("prod", "a", PolicyModeEnforce, map[string]string{"app": "api"}), pol("prod", "b", PolicyModeEnforce, map[string]string{"version": "v1"})}, "Policy prod/a and Policy prod/b"},
		{"disjoint selectors", []Resource{pol("prod", "a", PolicyModeEnforce, map[string]string{"app": "api"}), pol("prod", "b", PolicyModeEnforce, map[string]string{"app": "web"})}, ""},
		{"selector beside namespace-wide", []Resource{pol("prod", "a", PolicyModeEnforce, map[string]string{"app": "api"}), pol("prod", "b", PolicyModeEnforce, nil)}, ""},
		{"other mode", []Resource{pol("prod", "a", PolicyModeEnforce, nil), pol("prod", "b", PolicyModeDryRun, nil)}, ""},
		{"other namespace", []Resource{pol("prod", "a", PolicyModeEnforce, nil), pol("dev", "a", PolicyModeEnforce, nil)}, ""},
	}
	for _, tt := range tests {
		err := CheckReferences(tt.rs)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}

// tarGz is a gzipped tar of files (path → content), as opa build writes
// a bundle.
func tarGz(t testing.TB, files [][2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f[0], Mode: 0o644, Size: int64(len(f[1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(f[1]))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// A Policy may carry an OPA bundle instead of inline modules: its .rego
// files are the modules; data files, links, both forms at once and
// bundles that expand too far are refused.
func TestPolicyResourceBundle(t *testing.T) {
	doc := func(b []byte, extra string) string {
		return policyHead + "spec:\n  bundle: " + base64.StdEncoding.EncodeToString(b) + "\n" + extra
	}
	good := tarGz(t, [][2]string{{"/.manifest", `{"revision":"1"}`}, {"/authz/authz.rego", "package sigil.authz"}, {"/authz/authz_test.rego", "package t"}})
	rs, err := Parse([]byte(doc(good, "")), "b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := rs[0].Policy.Spec.Enforced(); len(got) != 1 || got["authz/authz.rego"] != "package sigil.authz" {
		t.Fatalf("enforced modules %v", got)
	}
	if len(rs[0].Policy.Spec.All()) != 2 {
		t.Fatalf("all modules %v", rs[0].Policy.Spec.All())
	}
	spec, _ := rs[0].Spec()
	back, err := FromSpec(KindPolicy, "prod", "authz", spec)
	if err != nil || len(back.Policy.Spec.All()) != 2 {
		t.Fatalf("FromSpec: %v", err)
	}
	for _, tt := range []struct {
		name, doc, want string
	}{
		{"data file", doc(tarGz(t, [][2]string{{"a.rego", "package sigil.authz"}, {"data.json", "{}"}}), ""), "data files are not supported"},
		{"both", doc(good, "  modules: {a.rego: x}\n"), "give spec.modules or spec.bundle, not both"},
		{"not gzip", doc([]byte("plain"), ""), "spec.bundle: not a gzipped tar"},
		{"too large", doc(tarGz(t, [][2]string{{"a.rego", strings.Repeat("#", MaxBundleBytes+1)}}), ""), "at most 4194304 bytes"},
		{"no policy", doc(tarGz(t, [][2]string{{"a_test.rego", "package t"}}), ""), "spec.bundle: no policy module"},
	} {
		if _, err := Parse([]byte(tt.doc), "b.yaml"); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

// FuzzPolicyBundle feeds readBundle (what apply and every sidecar read
// from a Policy's spec.bundle) arbitrary bytes: it never panics, and what
// it returns stays within MaxBundleBytes with names that are paths in
// the bundle.
func FuzzPolicyBundle(f *testing.F) {
	f.Add(tarGz(f, [][2]string{{"/.manifest", "{}"}, {"/authz/authz.rego", "package sigil.authz"}}))
	f.Add(tarGz(f, [][2]string{{"../../etc/passwd.rego", "x"}, {"data.json", "{}"}}))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		files, err := readBundle(b)
		if err != nil {
			return
		}
		total := 0
		for name, src := range files {
			total += len(src)
			if strings.HasPrefix(name, "/") || strings.Contains("/"+name+"/", "/../") {
				t.Fatalf("name %q leaves the bundle", name)
			}
		}
		if total > MaxBundleBytes {
			t.Fatalf("%d bytes read, more than %d", total, MaxBundleBytes)
		}
	})
}
