package deploy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func render(t *testing.T, p Params) []Object {
	t.Helper()
	out, err := Render(p)
	if err != nil {
		t.Fatalf("Render(%+v): %v", p, err)
	}
	objs, err := Objects(out)
	if err != nil {
		t.Fatalf("Objects: %v", err)
	}
	return objs
}

func find(t *testing.T, objs []Object, kind, name string) Object {
	t.Helper()
	for _, o := range objs {
		if o.Kind() == kind && o.Name() == name {
			return o
		}
	}
	t.Fatalf("no %s %s in the manifests", kind, name)
	return nil
}

// get walks o along keys (map keys, or [N] for list elements).
func get(o any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, _ := o.(map[string]any)
			if om, ok := o.(Object); ok {
				m = om
			}
			o = m[k]
		case int:
			l, _ := o.([]any)
			if k >= len(l) {
				return nil
			}
			o = l[k]
		}
	}
	return o
}

func TestRenderParamsValidated(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Params
		want string // "" for no error
	}{
		{"defaults", Params{TrustDomain: "example.org"}, ""},
		{"all set", Params{TrustDomain: "prod.example.org", Namespace: "mesh", Cluster: "eu-west-1", Image: "registry.example:5000/team/sigil:v1.2@sha256:" + strings.Repeat("a", 64)}, ""},
		{"no trust domain", Params{}, "--trust-domain is required"},
		{"trust domain as an ID", Params{TrustDomain: "spiffe://example.org"}, "give the trust domain's name alone"},
		{"trust domain upper case", Params{TrustDomain: "Example.org"}, "--trust-domain"},
		{"trust domain with a path", Params{TrustDomain: "example.org/x"}, "--trust-domain"},
		{"namespace not a label", Params{TrustDomain: "example.org", Namespace: "Sigil_System"}, "--namespace"},
		{"namespace with a dot", Params{TrustDomain: "example.org", Namespace: "a.b"}, "--namespace"},
		{"cluster with a slash", Params{TrustDomain: "example.org", Cluster: "a/b"}, "--cluster"},
		{"cluster dot-dot", Params{TrustDomain: "example.org", Cluster: ".."}, "--cluster"},
		{"image with a space", Params{TrustDomain: "example.org", Image: "sigil:dev x"}, "--image"},
		{"image breaking out of YAML", Params{TrustDomain: "example.org", Image: "sigil\"\nkind: Secret"}, "--image"},
		{"image with a template", Params{TrustDomain: "example.org", Image: "{{.Namespace}}"}, "--image"},
		{"image too long", Params{TrustDomain: "example.org", Image: strings.Repeat("a", 513)}, "--image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(tc.p)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Render: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Render accepted %+v; want an error with %q", tc.p, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Render: %v; want an error with %q", err, tc.want)
			}
		})
	}
}

// TestRenderTemplated checks that the parameters reach every place that
// depends on them, and that nothing of the defaults leaks past them.
func TestRenderTemplated(t *testing.T) {
	p := Params{TrustDomain: "mesh.internal", Namespace: "mesh", Cluster: "eu1", Image: "registry.example/sigil:v9"}
	objs := render(t, p)
	clusterScoped := map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "MutatingWebhookConfiguration": true, "CustomResourceDefinition": true}
	for _, o := range objs {
		if clusterScoped[o.Kind()] {
			if o.Namespace() != "" {
				t.Errorf("%s %s: cluster-scoped, has namespace %q", o.Kind(), o.Name(), o.Namespace())
			}
			continue
		}
		if o.Namespace() != p.Namespace {
			t.Errorf("%s %s: namespace %q, want %q", o.Kind(), o.Name(), o.Namespace(), p.Namespace)
		}
	}
	if ns := find(t, objs, "Namespace", p.Namespace); ns == nil {
		t.Fatal("no namespace")
	}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, o := range objs {
			if o.Kind() != kind {
				continue
			}
			if got := get(o, "subjects", 0, "namespace"); got != p.Namespace {
				t.Errorf("%s %s: subject namespace %v, want %s", kind, o.Name(), got, p.Namespace)
			}
		}
	}
	server := find(t, objs, "Deployment", "sigil-server")
	serverArgs := stringsOf(get(server, "spec", "template", "spec", "containers", 0, "args"))
	for _, want := range []string{"--trust-domain=" + p.TrustDomain, "--k8s-cluster=" + p.Cluster, "--k8s-namespace=" + p.Namespace, "--inject-proxy-image=" + p.Image, "--k8s-psat-allowed-sa=" + p.Namespace + ":sigil-agent"} {
		if !slices.Contains(serverArgs, want) {
			t.Errorf("server args %q: no %s", serverArgs, want)
		}
	}
	agent := find(t, objs, "DaemonSet", "sigil-agent")
	agentArgs := stringsOf(get(agent, "spec", "template", "spec", "containers", 0, "args"))
	for _, want := range []string{"--trust-domain=" + p.TrustDomain, "--server=sigil-server-agents." + p.Namespace + ".svc:8081", "--kubernetes", "--node-name=$(NODE_NAME)"} {
		if !slices.Contains(agentArgs, want) {
			t.Errorf("agent args %q: no %s", agentArgs, want)
		}
	}
	for _, o := range []Object{server, agent} {
		if got := get(o, "spec", "template", "spec", "containers", 0, "image"); got != p.Image {
			t.Errorf("%s image %v, want %s", o.Name(), got, p.Image)
		}
	}
	hook := find(t, objs, "MutatingWebhookConfiguration", "sigil-sidecar-injector")
	hooks, _ := get(hook, "webhooks").([]any)
	if len(hooks) == 0 {
		t.Fatal("webhook configuration has no webhooks")
	}
	for i := range hooks {
		svc := get(hook, "webhooks", i, "clientConfig", "service")
		want := map[string]any{"name": "sigil-server", "namespace": p.Namespace, "path": "/inject", "port": float64(443)}
		if !maps.Equal(svc.(map[string]any), want) {
			t.Errorf("webhook %d service %v, want %v", i, svc, want)
		}
	}
	// The CRDs are the same for every installation (their descriptions
	// may name the default namespace); every other object is checked.
	for _, o := range objs {
		if o.Kind() == "CustomResourceDefinition" {
			continue
		}
		text, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		for _, leak := range []string{DefaultImage, DefaultNamespace, "example.org"} {
			if strings.Contains(string(text), leak) {
				t.Errorf("%s %s for %+v still holds the default %q", o.Kind(), o.Name(), p, leak)
			}
		}
	}
}

func stringsOf(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, s := range l {
		out = append(out, fmt.Sprint(s))
	}
	return out
}

// TestRBACLeastPrivilege pins every rule of every role: a grant added to
// the manifests fails here until it is added to this table on purpose,
// and no rule holds a wildcard.
func TestRBACLeastPrivilege(t *testing.T) {
	want := map[string][]string{
		"ClusterRole/sigil-server": {
			"authentication.k8s.io/tokenreviews: create",
			"/pods: get,list,watch",
			"/services: get,list,watch",
			"/namespaces: get,list,watch",
			"discovery.k8s.io/endpointslices: list,watch",
			"networking.istio.io/virtualservices: get,list,watch",
			"networking.istio.io/destinationrules: get,list,watch",
			"networking.istio.io/virtualservices/status: update,patch",
			"networking.istio.io/destinationrules/status: update,patch",
			"security.sigil.dev/policies: get,list,watch",
			"security.sigil.dev/policies/status: update,patch",
			"gateway.networking.k8s.io/httproutes: get,list,watch",
			"gateway.networking.k8s.io/grpcroutes: get,list,watch",
			"gateway.networking.k8s.io/httproutes/status: update,patch",
			"gateway.networking.k8s.io/grpcroutes/status: update,patch",
			"apiextensions.k8s.io/customresourcedefinitions: get,list,watch",
			"admissionregistration.k8s.io/mutatingwebhookconfigurations[sigil-sidecar-injector]: get,patch",
		},
		"Role/sigil-server": {
			"coordination.k8s.io/leases[sigil-server]: get,update",
			"coordination.k8s.io/leases: create",
			"/secrets[sigil-ca]: get,list,watch,update",
			"/secrets: create",
			"/configmaps: create",
			"/configmaps[sigil-bundle]: get,update",
			"/configmaps[sigil-agent-evictions]: get,list,watch,update",
		},
		"ClusterRole/sigil-agent": {
			"/pods: list,watch",
		},
	}
	got := map[string][]string{}
	for _, o := range render(t, Params{TrustDomain: "example.org"}) {
		if o.Kind() != "ClusterRole" && o.Kind() != "Role" {
			continue
		}
		role := o.Kind() + "/" + o.Name()
		rules, _ := get(o, "rules").([]any)
		for i := range rules {
			groups := stringsOf(get(rules, i, "apiGroups"))
			resources := stringsOf(get(rules, i, "resources"))
			names := stringsOf(get(rules, i, "resourceNames"))
			verbs := stringsOf(get(rules, i, "verbs"))
			for _, field := range [][]string{groups, resources, names, verbs, stringsOf(get(rules, i, "nonResourceURLs"))} {
				if slices.ContainsFunc(field, func(s string) bool { return strings.Contains(s, "*") }) {
					t.Errorf("%s rule %d: a wildcard in %q", role, i, field)
				}
			}
			for _, g := range groups {
				for _, r := range resources {
					key := g + "/" + r
					if len(names) > 0 {
						key += "[" + strings.Join(names, ",") + "]"
					}
					got[role] = append(got[role], key+": "+strings.Join(verbs, ","))
				}
			}
		}
	}
	for role := range want {
		slices.Sort(want[role])
		slices.Sort(got[role])
		if !slices.Equal(got[role], want[role]) {
			t.Errorf("%s grants\n  %s\nwant\n  %s", role, strings.Join(got[role], "\n  "), strings.Join(want[role], "\n  "))
		}
	}
	for role := range got {
		if _, ok := want[role]; !ok {
			t.Errorf("%s: a role this test does not pin: %q", role, got[role])
		}
	}
}

func TestObjectsRefusesNonObjects(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"not yaml", "a: [", "document 1"},
		{"no kind", "apiVersion: v1\nmetadata:\n  name: x\n", "not a Kubernetes object"},
		{"duplicate key", "apiVersion: v1\nkind: A\nkind: B\nmetadata:\n  name: x\n", "document 1"},
		{"second bad", "apiVersion: v1\nkind: A\nmetadata:\n  name: x\n---\nkind: B\n", "document 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Objects([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Objects(%q) = %v; want an error with %q", tc.in, err, tc.want)
			}
		})
	}
	objs, err := Objects([]byte("# only a comment\n---\napiVersion: v1\nkind: A\nmetadata:\n  name: x\n"))
	if err != nil || len(objs) != 1 || objs[0].Kind() != "A" || objs[0].Name() != "x" {
		t.Fatalf("Objects = %v, %v; want the one object A/x", objs, err)
	}
}

// TestSkipIstioCRDs: --skip-istio-crds leaves out exactly Sigil's copies
// of Istio's CRDs, so a cluster with Istio keeps its own.
func TestSkipIstioCRDs(t *testing.T) {
	kinds := func(skip bool) map[string]bool {
		out, err := Render(Params{TrustDomain: "example.org", SkipIstioCRDs: skip})
		if err != nil {
			t.Fatal(err)
		}
		objs, err := Objects(out)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, o := range objs {
			if o.Kind() == "CustomResourceDefinition" {
				got[o.Name()] = true
			}
		}
		return got
	}
	all, skipped := kinds(false), kinds(true)
	for _, name := range []string{"virtualservices.networking.istio.io", "destinationrules.networking.istio.io"} {
		if !all[name] || skipped[name] {
			t.Errorf("%s: in the full install %v, with --skip-istio-crds %v", name, all[name], skipped[name])
		}
	}
	if !skipped["policies.security.sigil.dev"] {
		t.Error("--skip-istio-crds left out Sigil's own Policy CRD")
	}
}
