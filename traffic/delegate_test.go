package traffic

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestDelegateValidation: Istio's rules for delegation (a root route has
// no route or redirect; a delegate VirtualService, one with no hosts, has
// no gateways, tcp or tls routes and delegates no further), and Sigil's
// (no directResponse beside delegate; names that can name a resource).
func TestDelegateValidation(t *testing.T) {
	root := func(route string) string {
		return vsDoc("  - match: [{uri: {prefix: /productpage}}]\n    delegate: {name: productpage, namespace: team}\n" + route)
	}
	deleg := func(spec string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: productpage, namespace: team}\nspec:\n" + spec
	}
	tests := []struct {
		name, doc string
		want      []string // nil: accepted
	}{
		{"root", root(""), nil},
		{"root, no namespace", vsDoc("  - delegate: {name: productpage}\n"), nil},
		{"root with timeout and headers", root("    timeout: 5s\n    headers: {request: {set: {x-a: b}}}\n"), nil},
		{"delegate", deleg("  http:\n  - match: [{uri: {exact: /productpage/v1}}]\n    route: [{destination: {host: productpage, subset: v1}}]\n"), nil},
		{"delegate exported", deleg("  exportTo: ['*']\n  http:\n  - route: [{destination: {host: productpage}}]\n"), nil},
		{"root with route", root("    route: [{destination: {host: api}}]\n"), []string{"spec.http[0].delegate", "must not have route"}},
		{"root with redirect", root("    redirect: {uri: /x}\n"), []string{"spec.http[0].delegate", "must not have redirect"}},
		{"root with directResponse", root("    directResponse: {status: 200}\n"), []string{"spec.http[0].delegate", "must not have directResponse"}},
		{"no name", vsDoc("  - delegate: {namespace: team}\n"), []string{"spec.http[0].delegate.name"}},
		{"bad namespace", vsDoc("  - delegate: {name: a, namespace: nsA}\n"), []string{"spec.http[0].delegate.namespace", "RFC 1123 label"}},
		{"delegate with gateways", deleg("  gateways: [mesh]\n  http:\n  - route: [{destination: {host: a}}]\n"), []string{"spec.gateways", "delegate VirtualService"}},
		{"delegate with tcp", deleg("  tcp:\n  - route: [{destination: {host: a}}]\n"), []string{"spec.tcp", "only http routes are delegated"}},
		{"delegate with tls", deleg("  tls:\n  - match: [{sniHosts: [a.example.com]}]\n    route: [{destination: {host: a}}]\n"), []string{"spec.tls", "only http routes"}},
		{"delegate delegating", deleg("  http:\n  - delegate: {name: other}\n"), []string{"spec.http[0].delegate", "one level only"}},
		{"delegate without routes", deleg("  exportTo: ['*']\n"), []string{"spec.http"}},
		{"misspelled", vsDoc("  - delegate: {name: a, ns: b}\n"), []string{`"ns"`}},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
}

// TestDelegateMerge: a sidecar's table has a root route's place taken by
// its delegate's routes, their matches narrowed to the root's (Istio's
// rules), the root's timeout and headers filling in, hosts resolved in
// the delegate's namespace; a conflicting delegate route, and a route
// whose delegate is missing or not exported to the root's namespace, are
// left out; the root's exportTo, not the delegate's, says which sidecars
// get the routes.
func TestDelegateMerge(t *testing.T) {
	root := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: prod}
spec:
  hosts: [bookinfo]
  http:
  - name: pp
    match: [{uri: {prefix: /productpage}}]
    delegate: {name: productpage, namespace: team}
    timeout: 3s
    headers: {request: {set: {x-root: "1"}}}
  - name: missing
    match: [{uri: {prefix: /missing}}]
    delegate: {name: nowhere}
  - name: hidden
    match: [{uri: {prefix: /hidden}}]
    delegate: {name: hidden, namespace: team}
  - name: rest
    route: [{destination: {host: bookinfo}}]
`
	delegate := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: team}
spec:
  exportTo: [prod]
  http:
  - name: v1
    match: [{uri: {exact: /productpage/v1}}]
    timeout: 1s
    route: [{destination: {host: productpage}}]
  - name: beta
    match: [{uri: {prefix: /productpage/beta}, headers: {x-beta: {exact: "yes"}}}]
    route: [{destination: {host: productpage.other.svc.cluster.local}}]
  - name: elsewhere
    match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews}}]
  - name: all
    route: [{destination: {host: productpage}, weight: 100}]
`
	hidden := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hidden, namespace: team}
spec:
  exportTo: ["."]
  http:
  - route: [{destination: {host: hidden}}]
`
	rs := mustParse(t, root, delegate, hidden)
	tab := Compile(1, SelectedFor(rs, "prod", nil))
	for _, tt := range []struct {
		path    string
		headers map[string]string
		route   string // "" for none
		dest    string
		timeout string
	}{
		{"/productpage/v1", nil, "pp-v1", "productpage.team", "1s"},
		{"/productpage/beta/x", map[string]string{"x-beta": "yes"}, "pp-beta", "productpage.other", "3s"},
		{"/productpage/beta/x", nil, "pp-all", "productpage.team", "3s"},
		{"/productpage/other", nil, "pp-all", "productpage.team", "3s"},
		{"/reviews", nil, "rest", "bookinfo.prod", "0s"},   // the conflicting delegate route is left out
		{"/missing/a", nil, "rest", "bookinfo.prod", "0s"}, // no such delegate: the route is left out
		{"/hidden/a", nil, "rest", "bookinfo.prod", "0s"},  // not exported to prod: left out
		{"/productpage", nil, "pp-all", "productpage.team", "3s"},
	} {
		r := httptest.NewRequest("GET", "http://bookinfo"+tt.path, nil)
		for k, v := range tt.headers {
			r.Header.Set(k, v)
		}
		m, ok := tab.Match("bookinfo.prod", r, nil)
		if !ok {
			t.Errorf("%s: no route", tt.path)
			continue
		}
		d := m.Dests[0]
		if m.Name != tt.route || d.Service+"."+d.Namespace != tt.dest || m.Timeout.String() != tt.timeout {
			t.Errorf("%s %v: route %q to %s.%s, timeout %s; want %q to %s, timeout %s", tt.path, tt.headers, m.Name, d.Service, d.Namespace, m.Timeout, tt.route, tt.dest, tt.timeout)
		}
		if strings.HasPrefix(tt.route, "pp-") && (m.Headers == nil || m.Headers.Request.Set["x-root"] != "1") {
			t.Errorf("%s: the root's headers were not inherited: %+v", tt.path, m.Headers)
		}
	}
	// The delegate is exported to prod only; the root to every namespace:
	// a sidecar in another namespace gets the merged routes all the same.
	if m, ok := Compile(1, SelectedFor(rs, "web", nil)).Match("bookinfo.prod", httptest.NewRequest("GET", "http://bookinfo/productpage/v1", nil), nil); !ok || m.Name != "pp-v1" {
		t.Errorf("sidecar in namespace web: route %q, want pp-v1", m.Name)
	}
	// A delegate on its own routes nothing.
	if tab.HasRoutes("productpage.team") {
		t.Error("the delegate VirtualService routes productpage.team on its own")
	}
	und := UndefinedDelegates(rs)
	if len(und) != 2 || und[0].Name != "prod/nowhere" || und[1].Name != "team/hidden" || !strings.Contains(und[0].String(), "spec.http[1].delegate") {
		t.Errorf("undefined delegates %+v, want prod/nowhere and team/hidden", und)
	}
}

// TestDelegateMatchConflict: Istio's stringMatchConflict and hasConflict,
// case by case.
func TestDelegateMatchConflict(t *testing.T) {
	s := func(v string) *string { return &v }
	exact := func(v string) *StringMatch { return &StringMatch{Exact: s(v)} }
	prefix := func(v string) *StringMatch { return &StringMatch{Prefix: s(v)} }
	regex := func(v string) *StringMatch { return &StringMatch{Regex: s(v)} }
	for _, tt := range []struct {
		name      string
		root, sub HTTPMatchRequest
		conflict  bool
	}{
		{"none set", HTTPMatchRequest{}, HTTPMatchRequest{}, false},
		{"root unset", HTTPMatchRequest{}, HTTPMatchRequest{URI: exact("/a")}, false},
		{"sub unset", HTTPMatchRequest{URI: prefix("/a")}, HTTPMatchRequest{}, false},
		{"exact under exact", HTTPMatchRequest{URI: exact("/a")}, HTTPMatchRequest{URI: exact("/a")}, false},
		{"other exact", HTTPMatchRequest{URI: exact("/a")}, HTTPMatchRequest{URI: exact("/b")}, true},
		{"prefix under exact", HTTPMatchRequest{URI: exact("/a")}, HTTPMatchRequest{URI: prefix("/a")}, true},
		{"longer prefix under prefix", HTTPMatchRequest{URI: prefix("/a")}, HTTPMatchRequest{URI: prefix("/a/b")}, false},
		{"shorter prefix under prefix", HTTPMatchRequest{URI: prefix("/a/b")}, HTTPMatchRequest{URI: prefix("/a")}, true},
		{"exact under prefix", HTTPMatchRequest{URI: prefix("/a")}, HTTPMatchRequest{URI: exact("/a/x")}, false},
		{"exact outside prefix", HTTPMatchRequest{URI: prefix("/a")}, HTTPMatchRequest{URI: exact("/b")}, true},
		{"regex root", HTTPMatchRequest{URI: regex("/a.*")}, HTTPMatchRequest{URI: exact("/a")}, true},
		{"regex sub", HTTPMatchRequest{URI: prefix("/a")}, HTTPMatchRequest{URI: regex("/a.*")}, true},
		{"empty root prefix", HTTPMatchRequest{URI: prefix("")}, HTTPMatchRequest{URI: prefix("/a")}, true},
		{"header outside", HTTPMatchRequest{Headers: map[string]StringMatch{"x": *exact("1")}}, HTTPMatchRequest{Headers: map[string]StringMatch{"x": *exact("2")}}, true},
		{"header added", HTTPMatchRequest{Headers: map[string]StringMatch{"x": *exact("1")}}, HTTPMatchRequest{Headers: map[string]StringMatch{"y": *exact("2")}}, false},
		{"query outside", HTTPMatchRequest{QueryParams: map[string]StringMatch{"q": *prefix("a")}}, HTTPMatchRequest{QueryParams: map[string]StringMatch{"q": *prefix("b")}}, true},
		{"method", HTTPMatchRequest{Method: exact("GET")}, HTTPMatchRequest{Method: exact("POST")}, true},
		{"ignoreUriCase differs", HTTPMatchRequest{IgnoreURICase: true}, HTTPMatchRequest{}, true},
		{"ports differ", HTTPMatchRequest{Port: 80}, HTTPMatchRequest{Port: 81}, true},
		{"port added", HTTPMatchRequest{}, HTTPMatchRequest{Port: 81}, false},
		{"source label differs", HTTPMatchRequest{SourceLabels: map[string]string{"app": "a"}}, HTTPMatchRequest{SourceLabels: map[string]string{"app": "b"}}, true},
		{"gateways outside", HTTPMatchRequest{Gateways: []string{"mesh"}}, HTTPMatchRequest{Gateways: []string{"gw"}}, true},
		{"gateways within", HTTPMatchRequest{Gateways: []string{"mesh", "gw"}}, HTTPMatchRequest{Gateways: []string{"mesh"}}, false},
	} {
		if got := matchConflict(tt.root, tt.sub); got != tt.conflict {
			t.Errorf("%s: conflict %v, want %v", tt.name, got, tt.conflict)
		}
	}
	// Merged: the delegate's fields win, the root's fill in, maps merge.
	m := mergeMatch(HTTPMatchRequest{Name: "r", URI: prefix("/a"), Method: exact("GET"), Headers: map[string]StringMatch{"x": *exact("1")}, Port: 80},
		HTTPMatchRequest{Name: "s", URI: exact("/a/b"), Headers: map[string]StringMatch{"y": *exact("2")}})
	if m.Name != "r-s" || *m.URI.Exact != "/a/b" || *m.Method.Exact != "GET" || len(m.Headers) != 2 || m.Port != 80 {
		t.Errorf("merged match %+v", m)
	}
}
