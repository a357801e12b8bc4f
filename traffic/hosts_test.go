package traffic

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func mustParse(t *testing.T, docs ...string) []Resource {
	t.Helper()
	rs, err := Parse([]byte(strings.Join(docs, "\n---\n")), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func dr(ns, name, host, extra string) string {
	return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n  host: \"" + host + "\"\n" + extra
}

func vsTo(ns, name, host, dest, subset, extra string) string {
	s := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n  hosts: [\"" + host + "\"]\n" + extra + "  http:\n  - route:\n    - destination: {host: \"" + dest + "\""
	if subset != "" {
		s += ", subset: " + subset
	}
	return s + "}\n"
}

const v2Subset = "  subsets:\n  - name: v2\n    labels: {version: v2}\n"

// Services live in namespaces: reviews.prod and reviews.staging are two
// services, each with its own DestinationRule, and a route in prod is
// never satisfied by a subset defined for staging.
func TestNamespacedServicesReferences(t *testing.T) {
	tests := []struct {
		name string
		docs []string
		want string // empty: accepted
	}{
		{"two rules, two namespaces, by FQDN", []string{
			dr("prod", "reviews", "reviews.prod.svc.cluster.local", v2Subset),
			dr("staging", "reviews", "reviews.staging.svc.cluster.local", v2Subset),
		}, ""},
		{"two rules, one namespace, both short", []string{
			dr("prod", "reviews", "reviews", v2Subset),
			dr("staging", "reviews", "reviews", v2Subset),
		}, ""},
		{"two rules for one service, short and FQDN", []string{
			dr("prod", "a", "reviews", v2Subset),
			dr("staging", "b", "reviews.prod.svc.cluster.local", v2Subset),
		}, `spec.host "reviews.prod.svc.cluster.local" (reviews.prod) already has DestinationRule prod/a`},
		{"route in prod, subset only in staging", []string{
			dr("staging", "reviews", "reviews", v2Subset),
			vsTo("prod", "reviews", "reviews", "reviews", "v2", ""),
		}, `subset "v2" of reviews is not defined by any DestinationRule for reviews.prod`},
		{"route in prod to staging's subset by name", []string{
			dr("staging", "reviews", "reviews", v2Subset),
			vsTo("prod", "reviews", "reviews", "reviews.staging.svc.cluster.local", "v2", ""),
		}, ""},
		{"outside host's subset never defines the service's", []string{
			dr("prod", "ext", "reviews.example.com", v2Subset),
			vsTo("prod", "reviews", "reviews", "reviews", "v2", ""),
		}, `subset "v2" of reviews is not defined by any DestinationRule for reviews.prod`},
		{"a wildcard rule's subsets cover its services", []string{
			dr("prod", "all", "*.prod.svc.cluster.local", v2Subset),
			vsTo("prod", "reviews", "reviews", "reviews", "v2", ""),
		}, ""},
		{"a wildcard rule covers no other namespace", []string{
			dr("prod", "all", "*.prod.svc.cluster.local", v2Subset),
			vsTo("staging", "reviews", "reviews", "reviews", "v2", ""),
		}, `subset "v2" of reviews is not defined by any DestinationRule for reviews.staging`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantRefusalOrWarning(t, tt.docs, tt.want) })
	}
}

// wantRefusalOrWarning checks that docs are refused (CheckReferences) or
// warned of (UndefinedSubsets) with a message containing want, or neither
// when want is empty: either names the subset and the host it was looked
// for in.
func wantRefusalOrWarning(t *testing.T, docs []string, want string) {
	t.Helper()
	all := mustParse(t, docs...)
	var got []string
	if err := CheckReferences(all); err != nil {
		got = append(got, err.Error())
	}
	for _, u := range UndefinedSubsets(all) {
		got = append(got, u.String())
	}
	msg := strings.Join(got, "\n")
	switch {
	case want == "" && msg != "":
		t.Fatal(msg)
	case want != "" && !strings.Contains(msg, want):
		t.Fatalf("got %q, want %q", msg, want)
	}
}

// TestUndefinedSubsetHonoursExportTo: a subset is defined for a route
// only by a DestinationRule exported to the namespaces the route applies
// in; one exported only to its own namespace (".") leaves a route of
// another namespace to 503 at its sidecars, and is warned of.
func TestUndefinedSubsetHonoursExportTo(t *testing.T) {
	for _, tt := range []struct {
		name string
		docs []string
		want string
	}{
		{"subset exported only to its own namespace", []string{
			dr("prod", "reviews", "reviews", v2Subset+"  exportTo: [\".\"]\n"),
			vsTo("demo", "r", "ratings", "reviews.prod.svc.cluster.local", "v2", ""),
		}, `subset "v2" of reviews.prod.svc.cluster.local is defined only by DestinationRules for reviews.prod not exported to namespace demo, where the route applies`},
		{"subset exported to the route's namespace", []string{
			dr("prod", "reviews", "reviews", v2Subset+"  exportTo: [\".\", demo]\n"),
			vsTo("demo", "r", "ratings", "reviews.prod.svc.cluster.local", "v2", ""),
		}, ""},
		{"subset exported everywhere", []string{
			dr("prod", "reviews", "reviews", v2Subset+"  exportTo: [\"*\"]\n"),
			vsTo("demo", "r", "ratings", "reviews.prod.svc.cluster.local", "v2", ""),
		}, ""},
		{"route exported to a namespace the subset is not", []string{
			dr("prod", "reviews", "reviews", v2Subset+"  exportTo: [\".\"]\n"),
			vsTo("prod", "r", "reviews", "reviews", "v2", "  exportTo: [\".\", demo]\n"),
		}, `not exported to namespace demo`},
	} {
		t.Run(tt.name, func(t *testing.T) { wantRefusalOrWarning(t, tt.docs, tt.want) })
	}
}

// The compiled table keeps namespaces apart: each service finds its own
// DestinationRule's subsets.
func TestNamespacedServicesTable(t *testing.T) {
	tab := Compile(1, mustParse(t,
		dr("prod", "reviews", "reviews.prod.svc.cluster.local", "  subsets:\n  - name: v2\n    labels: {track: prod}\n"),
		dr("staging", "reviews", "reviews.staging.svc.cluster.local", "  subsets:\n  - name: v2\n    labels: {track: staging}\n"),
	))
	for key, want := range map[string]string{"reviews.prod": "prod", "reviews.staging": "staging", "reviews.default": ""} {
		labels, ok := tab.SubsetLabels(key, "v2")
		if labels["track"] != want || ok != (want != "") {
			t.Errorf("%s: %v %v, want track %q", key, labels, ok, want)
		}
	}
}

// A host outside the mesh is accepted and kept apart: its resources apply
// to requests for that host only, never to the mesh service its first
// label names.
func TestOutsideHostsKeptApart(t *testing.T) {
	tab := Compile(1, mustParse(t,
		vsTo("default", "ext", "reviews.example.com", "reviews", "", ""),
		vsTo("default", "gh", "api.github.com", "api.github.com", "", ""),
		dr("default", "httpbin", "httpbin.org", "  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n"),
	))
	req := httptest.NewRequest("GET", "/", nil)
	for key, want := range map[string]bool{
		"reviews.example.com": true, "api.github.com": true,
		"reviews.default": false, "api.default": false, "reviews.example": false, "example.com": false,
	} {
		if _, ok := tab.Match(key, req, nil); ok != want {
			t.Errorf("Match(%s) = %v, want %v", key, ok, want)
		}
	}
	if p := tab.Policy(OutsideKey("httpbin.org"), ""); p == nil || p.LoadBalancer.Simple != "RANDOM" {
		t.Errorf("httpbin.org policy %+v", p)
	}
	if p := tab.Policy("httpbin.org", ""); p != nil {
		t.Errorf("httpbin.org's rule applied to the service httpbin of namespace org: %+v", p)
	}
	if p := tab.Policy("httpbin.default", ""); p != nil {
		t.Errorf("httpbin.org's rule applied to the service httpbin: %+v", p)
	}
	m, _ := tab.Match("api.github.com", req, nil)
	if d := m.Dests[0]; d.Outside != "api.github.com" || d.Service != "" {
		t.Errorf("destination %+v, want outside api.github.com", d)
	}
}

// Wildcard hosts match as in Istio: '*' only as the whole leftmost label,
// a suffix match at any depth, and the most specific host wins; "*" alone
// takes every host, which a VirtualService for sidecars may not.
func TestWildcardHosts(t *testing.T) {
	lb := func(s string) string { return "  trafficPolicy: {loadBalancer: {simple: " + s + "}}\n" }
	tab := Compile(1, mustParse(t,
		dr("default", "everything", "*", lb("ROUND_ROBIN")),
		dr("default", "local", "*.local", lb("LEAST_REQUEST")),
		dr("default", "prod", "*.prod.svc.cluster.local", lb("RANDOM")),
		dr("prod", "ratings", "ratings", lb("LEAST_CONN")),
		dr("default", "foo", "*.foo.com", lb("RANDOM")),
		vsTo("default", "bookinfo", "*.bookinfo.com", "reviews", "", ""),
	))
	for key, want := range map[string]string{
		"ratings.prod":      "LEAST_CONN",    // its own rule
		"reviews.prod":      "RANDOM",        // *.prod.svc.cluster.local
		"reviews.staging":   "LEAST_REQUEST", // *.local
		"a.foo.com":         "RANDOM",
		"b.a.foo.com":       "RANDOM",
		"foo.com.evil.test": "ROUND_ROBIN", // only "*" covers it
		"a.xfoo.com":        "ROUND_ROBIN",
	} {
		if p := tab.Policy(key, ""); p == nil || p.LoadBalancer.Simple != want {
			t.Errorf("Policy(%s) = %+v, want %s", key, p, want)
		}
	}
	req := httptest.NewRequest("GET", "/", nil)
	for key, want := range map[string]bool{"www.bookinfo.com": true, "a.b.bookinfo.com": true, "bookinfo.com": false, "reviews.default": false, "wwwbookinfo.com": false} {
		if _, ok := tab.Match(key, req, nil); ok != want {
			t.Errorf("Match(%s) = %v, want %v", key, ok, want)
		}
	}

	for _, tt := range []struct{ doc, want string }{
		{vsTo("default", "a", "*", "reviews", "", ""), `spec.hosts[0]: the wildcard host "*" is not allowed`},
		{vsTo("default", "a", "*foo.com", "reviews", "", ""), `spec.hosts[0]: "*foo.com" is not a host name: naming: '*' may only be the whole leftmost label`},
		{vsTo("default", "a", "a.*.com", "reviews", "", ""), "spec.hosts[0]"},
		{vsTo("default", "a", "reviews", "*.foo.com", "", ""), "spec.http[0].route[0].destination.host: \"*.foo.com\": a destination is one host"},
		{dr("default", "a", "foo.*", ""), "spec.host"},
		{dr("default", "a", "10.0.0.1", ""), `spec.host: "10.0.0.1" is not a host name: naming: not a mesh service name: "10.0.0.1" is an IP address`},
	} {
		_, err := Parse([]byte(tt.doc), "t.yaml")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s\nerr %v, want %q", tt.doc, err, tt.want)
		}
	}
}

// exportTo is honoured: "." is the resource's own namespace, "*" every
// namespace, other entries namespaces by name; absent means every one.
func TestExportTo(t *testing.T) {
	export := func(to string) string { return "  exportTo: " + to + "\n" }
	for _, tt := range []struct {
		to      string
		visible map[string]bool
	}{
		{"", map[string]bool{"prod": true, "staging": true}},
		{`["."]`, map[string]bool{"prod": true, "staging": false}},
		{`["*"]`, map[string]bool{"prod": true, "staging": true}},
		{`[staging]`, map[string]bool{"prod": false, "staging": true, "dev": false}},
		{`[".", dev]`, map[string]bool{"prod": true, "staging": false, "dev": true}},
	} {
		extra := ""
		if tt.to != "" {
			extra = export(tt.to)
		}
		rs := mustParse(t, vsTo("prod", "r", "reviews", "reviews", "", extra), dr("prod", "r", "reviews", extra))
		for ns, want := range tt.visible {
			for _, r := range rs {
				if r.Visible(ns) != want {
					t.Errorf("%s exportTo %s: visible in %s = %v, want %v", r.Kind, tt.to, ns, !want, want)
				}
			}
			if got := len(VisibleIn(rs, ns)); got != map[bool]int{true: 2, false: 0}[want] {
				t.Errorf("VisibleIn(%s) kept %d", ns, got)
			}
		}
	}
	for to, want := range map[string]string{
		`["~"]`:       `spec.exportTo[0]: "~" (exported to no namespace) is not supported`,
		`[".", "."]`:  `spec.exportTo[1]: "." repeats`,
		`["*", prod]`: `spec.exportTo: "*" exports to every namespace and cannot be combined`,
		`[nsA]`:       `spec.exportTo[0]: "nsA": want ".", "*" or a namespace`,
	} {
		for _, doc := range []string{vsTo("prod", "r", "reviews", "reviews", "", export(to)), dr("prod", "r", "reviews", export(to))} {
			_, err := Parse([]byte(doc), "t.yaml")
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("exportTo %s: err %v, want %q", to, err, want)
			}
		}
	}
}

// TestOneVirtualServicePerHostAtASidecar: as at Istio's sidecars (no
// merging for the mesh gateway), one VirtualService routes a host: the
// one of the sidecar's own namespace, else the first by
// namespace/name; another one's routes for that host never apply, even
// where the first has no route for the request.
func TestOneVirtualServicePerHostAtASidecar(t *testing.T) {
	only := func(ns, name, prefix string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n  hosts: [reviews.prod.svc.cluster.local]\n  http:\n  - match: [{uri: {prefix: " + prefix + "}}]\n    route:\n    - destination: {host: reviews.prod.svc.cluster.local}\n"
	}
	rs := mustParse(t, only("prod", "z-prod", "/p"), only("staging", "a-staging", "/s"), only("staging", "b-staging", "/b"))
	tests := []struct {
		namespace string
		routed    map[string]string // path: the VirtualService that routes it ("": none)
	}{
		{"prod", map[string]string{"/p": "VirtualService prod/z-prod", "/s": "", "/b": ""}},
		{"staging", map[string]string{"/p": "", "/s": "VirtualService staging/a-staging", "/b": ""}},
		{"dev", map[string]string{"/p": "VirtualService prod/z-prod", "/s": "", "/b": ""}},
	}
	for _, tt := range tests {
		tab := CompileFor(1, SelectedFor(rs, tt.namespace, nil), tt.namespace)
		for path, want := range tt.routed {
			m, ok := tab.Match("reviews.prod", httptest.NewRequest("GET", "http://reviews.prod"+path, nil), nil)
			got := ""
			if ok {
				got = m.Source
			}
			if got != want {
				t.Errorf("sidecar in %s, %s: routed by %q, want %q", tt.namespace, path, got, want)
			}
		}
	}
}
