package traffic

import (
	"strings"
	"testing"
)

// selectorDR is a DestinationRule for host in namespace ns with a
// loadBalancer naming it (lb) and, unless sel is "", a workloadSelector.
func selectorDR(name, ns, host, lb, sel string) string {
	doc := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n  host: " + host + "\n  trafficPolicy: {loadBalancer: {simple: " + lb + "}}\n"
	if sel != "" {
		doc += "  workloadSelector: {matchLabels: " + sel + "}\n"
	}
	return doc
}

// TestWorkloadSelectorPicksRule: a DestinationRule with a workloadSelector
// applies only to sidecars of its own namespace whose labels match, and
// for them replaces the host's rule without a selector (Istio's rule);
// other sidecars keep the rule without one.
func TestWorkloadSelectorPicksRule(t *testing.T) {
	rs, err := Parse([]byte(selectorDR("all", "prod", "api", "RANDOM", "")+"---\n"+
		selectorDR("web", "prod", "api", "LEAST_REQUEST", "{app: web}")+"---\n"+
		selectorDR("batch", "prod", "api", "ROUND_ROBIN", "{app: batch, tier: back}")), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckReferences(rs); err != nil {
		t.Fatalf("rules with and without selectors for one host: %v", err)
	}
	for _, tt := range []struct {
		name, ns string
		labels   map[string]string
		want     string // loadBalancer.simple in force for api.prod
	}{
		{"selected", "prod", map[string]string{"app": "web", "version": "v1"}, "LEAST_REQUEST"},
		{"two labels", "prod", map[string]string{"app": "batch", "tier": "back"}, "ROUND_ROBIN"},
		{"one of two labels", "prod", map[string]string{"app": "batch"}, "RANDOM"},
		{"other labels", "prod", map[string]string{"app": "db"}, "RANDOM"},
		{"no labels", "prod", nil, "RANDOM"},
		{"other namespace, matching labels", "staging", map[string]string{"app": "web"}, "RANDOM"},
	} {
		tab := Compile(1, SelectedFor(rs, tt.ns, tt.labels))
		p := tab.Policy("api.prod", "")
		if p == nil || p.LoadBalancer == nil || p.LoadBalancer.Simple != tt.want {
			t.Errorf("%s: policy %+v, want loadBalancer %s", tt.name, p, tt.want)
		}
	}
	only, _ := Parse([]byte(selectorDR("web", "prod", "api", "LEAST_REQUEST", "{app: web}")), "g.yaml")
	if p := Compile(1, SelectedFor(only, "prod", map[string]string{"app": "db"})).Policy("api.prod", ""); p != nil {
		t.Errorf("a selector rule applied to a workload it does not select: %+v", p)
	}
}

// TestWorkloadSelectorReferences: one host may have one rule without a
// selector and rules whose selectors cannot select one workload; two that
// may (same labels, or labels that do not disagree) are refused, naming
// workloadSelector; namespaces are apart.
func TestWorkloadSelectorReferences(t *testing.T) {
	for _, tt := range []struct {
		name, a, b string
		want       string // "" accepted
	}{
		{"same selector", "{app: web}", "{app: web}", "spec.workloadSelector"},
		{"overlapping selectors", "{app: web}", "{tier: front}", "spec.workloadSelector"},
		{"empty selects all", "{}", "{app: web}", "spec.workloadSelector"},
		{"disjoint selectors", "{app: web}", "{app: db}", ""},
		{"two without selector", "", "", "already has"},
	} {
		rs, err := Parse([]byte(selectorDR("a", "prod", "api", "RANDOM", tt.a)+"---\n"+selectorDR("b", "prod", "api.prod.svc.cluster.local", "RANDOM", tt.b)), "f.yaml")
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		err = CheckReferences(rs)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want an error naming %s", tt.name, err, tt.want)
		}
	}
	rs, _ := Parse([]byte(selectorDR("a", "prod", "api.shared", "RANDOM", "{app: web}")+"---\n"+selectorDR("b", "staging", "api.shared", "RANDOM", "{app: web}")), "f.yaml")
	if err := CheckReferences(rs); err != nil {
		t.Errorf("selectors of two namespaces: %v", err)
	}
}

// TestWorkloadSelectorValidation: matchLabels keys and values are labels
// (naming.ValidateLabel), and a rule with a selector is not exported to
// other namespaces, where it could select nothing.
func TestWorkloadSelectorValidation(t *testing.T) {
	for _, tt := range []struct {
		name, spec string
		want       []string
	}{
		{"labels", "  workloadSelector: {matchLabels: {app: web, app.kubernetes.io/name: web-1}}\n", nil},
		{"empty", "  workloadSelector: {}\n", nil},
		{"bad key", "  workloadSelector: {matchLabels: {'bad key': web}}\n", []string{"spec.workloadSelector.matchLabels", "bad key"}},
		{"bad value", "  workloadSelector: {matchLabels: {app: 'web!'}}\n", []string{"spec.workloadSelector.matchLabels", "web!"}},
		{"wildcard value", "  workloadSelector: {matchLabels: {app: '*'}}\n", []string{"spec.workloadSelector.matchLabels"}},
		{"export to own", "  workloadSelector: {matchLabels: {app: web}}\n  exportTo: ['.']\n", nil},
		{"export to all", "  workloadSelector: {matchLabels: {app: web}}\n  exportTo: ['*']\n", []string{"spec.exportTo[0]", "workloadSelector"}},
		{"misspelt", "  workloadSelector: {matchlabels: {app: web}}\n", []string{"matchlabels"}},
	} {
		checkParse(t, tt.name, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: api\n"+tt.spec, tt.want)
	}
}

// TestLabelMapsValidated: every label map of a resource (a subset's
// labels, an HTTP, tcp or tls match's sourceLabels, a workloadSelector's
// matchLabels) holds Kubernetes labels, checked by naming.ValidateLabel,
// as Istio's validation does.
func TestLabelMapsValidated(t *testing.T) {
	dr := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: api\n  subsets:\n  - name: v1\n    labels: "
	vs := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  hosts: [api]\n"
	for _, tt := range []struct {
		name, doc string
		want      []string
	}{
		{"subset labels", dr + "{version: v1}\n", nil},
		{"subset bad value", dr + "{version: 'v 1'}\n", []string{"spec.subsets[0].labels", "v 1"}},
		{"http sourceLabels", vs + "  http:\n  - match: [{sourceLabels: {'-app': web}}]\n    route: [{destination: {host: api}}]\n", []string{"spec.http[0].match[0].sourceLabels", "-app"}},
		{"tcp sourceLabels", vs + "  tcp:\n  - match: [{sourceLabels: {app: 'web/x'}}]\n    route: [{destination: {host: api}}]\n", []string{"spec.tcp[0].match[0].sourceLabels"}},
		{"tls sourceLabels", vs + "  tls:\n  - match: [{sniHosts: [api], sourceLabels: {app: 'a:b'}}]\n    route: [{destination: {host: api}}]\n", []string{"spec.tls[0].match[0].sourceLabels"}},
	} {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
}

// TestWorkloadSelectorSubsets: a subset is defined for every workload only
// when each rule of its host defines it; one only a selector rule defines
// is reported as undefined (for the workloads the selector leaves out).
func TestWorkloadSelectorSubsets(t *testing.T) {
	doc := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: all}\nspec:\n  host: api\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n---\n" +
		"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web}\nspec:\n  host: api\n  workloadSelector: {matchLabels: {app: web}}\n  subsets: [{name: v1, labels: {version: v1}}, {name: v3, labels: {version: v3}}]\n---\n" +
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  hosts: [api]\n  http:\n  - route: [{destination: {host: api, subset: v1}, weight: 1}, {destination: {host: api, subset: v2}, weight: 1}, {destination: {host: api, subset: v3}, weight: 1}]\n"
	rs, err := Parse([]byte(doc), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range UndefinedSubsets(rs) {
		got = append(got, u.Subset)
	}
	if strings.Join(got, ",") != "v2,v3" {
		t.Errorf("undefined subsets %v, want v2 (not in the selector rule) and v3 (not in the other)", got)
	}
}
