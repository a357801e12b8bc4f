package gatewayapi

import (
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/traffic"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type req struct {
	method, target string
	hdr            map[string]string
}

func get(target string) req { return req{method: "GET", target: target} }

func TestPathPrefixSegmentAware(t *testing.T) {
	rs := parse(t, route("shop", "r", `  - matches: [{path: {type: PathPrefix, value: /foo}}]
    backendRefs: [{name: foo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /bar/}}]
    backendRefs: [{name: bar, port: 80}]
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: exact, port: 80}]
  - matches: [{path: {type: RegularExpression, value: "/re/[0-9]+"}}]
    backendRefs: [{name: re, port: 80}]`))
	for _, tc := range []struct {
		path, want string
	}{
		{"/foo", "foo.shop:80=100"},
		{"/foo/", "foo.shop:80=100"},
		{"/foo/bar", "foo.shop:80=100"},
		{"/foobar", ""},
		{"/bar", "bar.shop:80=100"}, // a trailing "/" of the prefix is ignored
		{"/bar/x", "bar.shop:80=100"},
		{"/barx", ""},
		{"/exact", "exact.shop:80=100"},
		{"/exact/", ""},
		{"/re/12", "re.shop:80=100"},
		{"/re/12x", ""},
	} {
		o := evaluate(t, rs, "shop", "api.shop", 80, "GET", tc.path, nil)
		if o.Backends != tc.want || (tc.want == "" && o.Status != 404) {
			t.Errorf("%s: got %+v, want backends %q", tc.path, o, tc.want)
		}
	}
}

func TestReplacePrefixMatchSegmentAware(t *testing.T) {
	// The table of HTTPPathModifier's ReplacePrefixMatch in the spec.
	for _, tc := range []struct {
		prefix, to, path, want string
	}{
		{"/foo", "/xyz", "/foo/bar", "/xyz/bar"},
		{"/foo", "/xyz/", "/foo/bar", "/xyz/bar"},
		{"/foo/", "/xyz", "/foo/bar", "/xyz/bar"},
		{"/foo/", "/xyz/", "/foo/bar", "/xyz/bar"},
		{"/foo", "/xyz", "/foo", "/xyz"},
		{"/foo", "/xyz", "/foo/", "/xyz/"},
		{"/foo", "", "/foo/bar", "/bar"},
		{"/foo", "", "/foo/", "/"},
		{"/foo", "", "/foo", "/"},
		{"/foo", "/", "/foo/", "/"},
		{"/foo", "/", "/foo", "/"},
		{"/", "/xyz", "/foo", "/xyz/foo"},
	} {
		rs := parse(t, route("shop", "r", `  - matches: [{path: {type: PathPrefix, value: "`+tc.prefix+`"}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: "`+tc.to+`"}}}]
    backendRefs: [{name: api, port: 8080}]`))
		o := evaluate(t, rs, "shop", "api.shop", 80, "GET", tc.path, nil)
		if o.Path != tc.want {
			t.Errorf("prefix %q → %q, path %q: got %q, want %q", tc.prefix, tc.to, tc.path, o.Path, tc.want)
		}
	}
	rs := parse(t, route("shop", "r", `  - matches: [{path: {type: PathPrefix, value: /foo}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /full}}}]
    backendRefs: [{name: api, port: 8080}]`))
	for _, p := range []string{"/foo", "/foo/bar/baz"} {
		if o := evaluate(t, rs, "shop", "api.shop", 80, "GET", p, nil); o.Path != "/full" {
			t.Errorf("ReplaceFullPath %s: got %q", p, o.Path)
		}
	}
}

func TestWeightsRelativeAndZero(t *testing.T) {
	for _, tc := range []struct {
		name, backends string
		want           outcome
	}{
		{"split", `[{name: a, port: 80, weight: 80}, {name: b, port: 80, weight: 20}]`, outcome{Backends: "a.shop:80=80,b.shop:80=20", Path: "/"}},
		{"default weight 1", `[{name: a, port: 80}, {name: b, port: 80}]`, outcome{Backends: "a.shop:80=1,b.shop:80=1", Path: "/"}},
		{"zero keeps its place", `[{name: a, port: 80, weight: 0}, {name: b, port: 80, weight: 3}]`, outcome{Backends: "a.shop:80=0,b.shop:80=3", Path: "/"}},
		// A single backend of weight 0 gets nothing: Sigil would give a
		// lone destination every request, so it is a 500.
		{"single zero", `[{name: a, port: 80, weight: 0}]`, outcome{Status: 500}},
		{"all zero", `[{name: a, port: 80, weight: 0}, {name: b, port: 80, weight: 0}]`, outcome{Status: 500}},
		{"none", `[]`, outcome{Status: 500}},
		// The share of a backend Sigil cannot reach answers 500.
		{"unresolved share", `[{name: a, port: 80, weight: 3}, {name: b, namespace: other, port: 80, weight: 1}]`, outcome{Backends: "a.shop:80=100", Path: "/", Abort: 25}},
		{"all unresolved", `[{name: b, namespace: other, port: 80}]`, outcome{Status: 500}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := parse(t, route("shop", "r", "  - backendRefs: "+tc.backends))
			if o := evaluate(t, rs, "shop", "api.shop", 80, "GET", "/", nil); o != tc.want {
				t.Errorf("got %+v, want %+v", o, tc.want)
			}
		})
	}
}

func TestMatchPrecedence(t *testing.T) {
	// Written lowest first: the translation must order them.
	rs := parse(t, route("shop", "r", `  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: root, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: short, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /a/b}}]
    backendRefs: [{name: long, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /a/b}, queryParams: [{name: q, value: "1"}]}]
    backendRefs: [{name: query, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /a/b}, headers: [{name: x, value: "1"}]}]
    backendRefs: [{name: header, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /a/b}, headers: [{name: x, value: "1"}, {name: "z", value: "1"}]}]
    backendRefs: [{name: headers2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /a/b}, method: POST}]
    backendRefs: [{name: method, port: 80}]
  - matches: [{path: {type: Exact, value: /a/b/c}}]
    backendRefs: [{name: exact, port: 80}]`))
	for _, tc := range []struct {
		r    req
		want string
	}{
		{get("/x"), "root"},
		{get("/a/x"), "short"},
		{get("/a/b/x"), "long"},
		{get("/a/b/x?q=1"), "query"},
		{req{"GET", "/a/b/x?q=1", map[string]string{"x": "1"}}, "header"},
		{req{"GET", "/a/b/x", map[string]string{"x": "1", "z": "1"}}, "headers2"},
		{req{"POST", "/a/b/x", map[string]string{"x": "1", "z": "1"}}, "method"},
		{req{"POST", "/a/b/c", map[string]string{"x": "1", "z": "1"}}, "exact"},
	} {
		o := evaluate(t, rs, "shop", "api.shop", 80, tc.r.method, tc.r.target, tc.r.hdr)
		if got, _, _ := strings.Cut(o.Backends, "."); got != tc.want {
			t.Errorf("%s %s %v: got %q, want %q", tc.r.method, tc.r.target, tc.r.hdr, got, tc.want)
		}
	}
}

func TestMatchPrecedenceAcrossRoutes(t *testing.T) {
	// Same match in three routes: the oldest wins, then namespace/name.
	mk := func(name, created, backend string) string {
		return strings.Replace(route("shop", name, `  - backendRefs: [{name: `+backend+`, port: 80}]`),
			"metadata: {", "metadata: {creationTimestamp: \""+created+"\", ", 1)
	}
	docs := mk("b-newer", "2026-01-02T00:00:00Z", "newer") + "---\n" + mk("z-old", "2026-01-01T00:00:00Z", "old") + "---\n" + mk("a-old", "2026-01-01T00:00:00Z", "aold")
	o := evaluate(t, parse(t, docs), "shop", "api.shop", 80, "GET", "/", nil)
	if !strings.HasPrefix(o.Backends, "aold.") {
		t.Errorf("got %q, want the oldest route, then the first by name (a-old)", o.Backends)
	}
}

func TestProducerAndConsumerRoutes(t *testing.T) {
	producer := route("shop", "producer", `  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Route, value: producer}]}}]
    backendRefs: [{name: api, port: 80}]`)
	consumer := route("web", "consumer", `  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Route, value: consumer}]}}]
    backendRefs: [{name: api, namespace: shop, port: 80}]`)
	rs := parse(t, producer+"---\n"+consumer)
	for _, tc := range []struct {
		caller, want string
	}{
		{"shop", "set:x-route=producer"},
		{"other", "set:x-route=producer"},
		{"web", "set:x-route=consumer"}, // the consumer's namespace takes its own
	} {
		if o := evaluate(t, rs, tc.caller, "api.shop", 80, "GET", "/", nil); o.RespSet != tc.want {
			t.Errorf("caller in %s: got %+v, want %s", tc.caller, o, tc.want)
		}
	}
	// A consumer route alone applies to its namespace only.
	rs = parse(t, consumer)
	if o := evaluate(t, rs, "other", "api.shop", 80, "GET", "/", nil); o.Backends != "default" {
		t.Errorf("consumer route seen from another namespace: %+v", o)
	}
	vss, _ := Translate(rs)
	if len(vss) != 1 || vss[0].Namespace != "web" || strings.Join(vss[0].VS.Spec.ExportTo, ",") != "." {
		t.Errorf("consumer VirtualService: %+v", vss)
	}
}

func TestPerPortParentRefs(t *testing.T) {
	rs := parse(t, strings.Replace(route("shop", "r", `  - backendRefs: [{name: v2, port: 80}]`), "port: 80}]\n  rules", "port: 8080}]\n  rules", 1))
	if o := evaluate(t, rs, "shop", "api.shop", 8080, "GET", "/", nil); o.Backends != "v2.shop:80=100" {
		t.Errorf("port 8080: %+v", o)
	}
	if o := evaluate(t, rs, "shop", "api.shop", 80, "GET", "/", nil); o.Backends != "default" {
		t.Errorf("port 80 must keep the Service's default routing: %+v", o)
	}
}

func TestRedirects(t *testing.T) {
	for _, tc := range []struct {
		filter, target string
		code           int
		location       string
	}{
		{`{scheme: https}`, "/pre?q=1", 302, "https://api/pre?q=1"},
		{`{hostname: example.org, statusCode: 301}`, "/pre", 301, "http://example.org/pre"},
		{`{hostname: example.org, port: 8443, scheme: https}`, "/pre", 302, "https://example.org:8443/pre"},
		{`{scheme: http, port: 80}`, "/pre", 302, "http://api/pre"},
		{`{path: {type: ReplaceFullPath, replaceFullPath: /full}, statusCode: 308}`, "/pre/x", 308, "http://api/full"},
		{`{path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}`, "/pre/x/y", 302, "http://api/new/x/y"},
		{`{path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}`, "/pre", 302, "http://api/new"},
		{`{statusCode: 303, hostname: h}`, "/pre", 303, "http://h/pre"},
		{`{statusCode: 307, hostname: h}`, "/pre", 307, "http://h/pre"},
	} {
		rs := parse(t, route("shop", "r", `  - matches: [{path: {type: PathPrefix, value: /pre}}]
    filters: [{type: RequestRedirect, requestRedirect: `+tc.filter+`}]`))
		o := evaluate(t, rs, "shop", "api.shop", 80, "GET", tc.target, nil)
		if o.Status != tc.code || o.Location != tc.location {
			t.Errorf("%s %s: got %d %q, want %d %q", tc.filter, tc.target, o.Status, o.Location, tc.code, tc.location)
		}
	}
}

func TestHeaderModifiersAndMatches(t *testing.T) {
	rs := parse(t, route("shop", "r", `  - matches: [{headers: [{name: X-Env, value: canary}, {type: RegularExpression, name: X-User, value: "u[0-9]+"}], queryParams: [{name: debug, value: "1"}]}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: "1"}], add: [{name: X-B, value: "2"}], remove: [X-C]}}
    backendRefs: [{name: canary, port: 80, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Backend, value: canary}]}}]}]
  - backendRefs: [{name: stable, port: 80}]`))
	o := evaluate(t, rs, "shop", "api.shop", 80, "GET", "/?debug=1", map[string]string{"X-Env": "canary", "X-User": "u42"})
	if o.Backends != "canary.shop:80=100" || o.ReqSet != "add:x-b=2;remove:x-c;set:x-a=1" {
		t.Errorf("matching request: %+v", o)
	}
	for _, h := range []map[string]string{{"X-Env": "canary", "X-User": "bob"}, {"X-Env": "prod", "X-User": "u1"}} {
		if o := evaluate(t, rs, "shop", "api.shop", 80, "GET", "/?debug=1", h); o.Backends != "stable.shop:80=100" {
			t.Errorf("%v: got %+v, want stable", h, o)
		}
	}
	if o := evaluate(t, rs, "shop", "api.shop", 80, "GET", "/", map[string]string{"X-Env": "canary", "X-User": "u1"}); o.Backends != "stable.shop:80=100" {
		t.Errorf("no query: got %+v, want stable", o)
	}
	vss, _ := Translate(rs)
	if d := vss[0].VS.Spec.HTTP[0].Route[0]; d.Headers == nil || d.Headers.Response.Set["x-backend"] != "canary" {
		t.Errorf("backend filter: %+v", d)
	}
}

func TestGRPCRouteMethodMatch(t *testing.T) {
	rs := parse(t, `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules:
  - matches: [{method: {service: shop.Cart, method: Add}}]
    backendRefs: [{name: add, port: 80}]
  - matches: [{method: {service: shop.Cart}}]
    backendRefs: [{name: cart, port: 80}]
  - matches: [{method: {method: Ping}}]
    backendRefs: [{name: ping, port: 80}]
  - matches: [{headers: [{name: x-tenant, value: a}]}]
    backendRefs: [{name: a, port: 80, weight: 9}, {name: b, port: 80, weight: 1}]
`)
	for _, tc := range []struct {
		path string
		hdr  map[string]string
		want string
	}{
		{"/shop.Cart/Add", nil, "add.shop:80=100"},
		{"/shop.Cart/Remove", nil, "cart.shop:80=100"},
		{"/other.Svc/Ping", nil, "ping.shop:80=100"},
		{"/other.Svc/Get", map[string]string{"x-tenant": "a"}, "a.shop:80=9,b.shop:80=1"},
		{"/other.Svc/Get", nil, ""},
	} {
		o := evaluate(t, rs, "shop", "api.shop", 80, "POST", tc.path, tc.hdr)
		if o.Backends != tc.want {
			t.Errorf("%s: got %+v, want %q", tc.path, o, tc.want)
		}
	}
}

func TestRefusalsNameTheField(t *testing.T) {
	for _, tc := range []struct{ rules, field string }{
		{`  - filters: [{type: CORS, cors: {allowOrigins: ["https://a"]}}]`, "spec.rules[0].filters[0].type"},
		{`  - filters: [{type: ExtensionRef, extensionRef: {group: x, kind: Ext, name: e}}]`, "spec.rules[0].filters[0].type"},
		{`  - retry: {attempts: 2}`, "spec.rules[0].retry"},
		{`  - timeouts: {backendRequest: 1s}`, "spec.rules[0].timeouts.backendRequest"},
		{`  - sessionPersistence: {sessionName: s}`, "spec.rules[0].sessionPersistence"},
		{`  - matches: [{path: {type: Exact, value: /x}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /y}}}]`, "spec.rules[0].matches[0].path.type"},
		{`  - matches: [{headers: [{type: RegularExpression, name: x, value: "("}]}]`, "spec.rules[0].matches[0].headers[0].value"},
		{`  - bogus: 1`, `"bogus"`},
		{`  - filters: [{type: URLRewrite, urlRewrite: {}}]`, "spec.rules[0].filters[0].urlRewrite"},
		{`  - backendRefs: [{name: a, port: 0}]`, "spec.rules[0].backendRefs[0].port"},
		{`  - backendRefs: [{name: a}]`, "spec.rules[0].backendRefs[0].port: required"},
		{`  - backendRefs: [{name: a, port: 80, weight: 1000001}]`, "spec.rules[0].backendRefs[0].weight"},
		{`  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: "a\nb"}]}}]
    backendRefs: [{name: a, port: 80}]`, "as the VirtualService it becomes"},
	} {
		_, err := Parse([]byte(route("shop", "r", tc.rules)), "t.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, want an error naming %s", tc.rules, err, tc.field)
		}
	}
	_, err := Parse([]byte(strings.Replace(route("shop", "r", "  - {}"), "spec:\n", "spec:\n  hostnames: [a.example]\n", 1)), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), "spec.hostnames") {
		t.Errorf("hostnames: %v", err)
	}
	_, err = traffic.Parse([]byte(route("shop", "r", "  - {}")), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), "sigil-server") {
		t.Errorf("traffic.Parse without a decoder: %v", err)
	}
}

func TestParentStatus(t *testing.T) {
	rs := parse(t, route("shop", "r", `  - backendRefs: [{name: a, port: 80}, {name: b, namespace: other, port: 80}]`)+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: gw, namespace: shop}
spec:
  parentRefs: [{name: some-gateway}]
  rules: [{backendRefs: [{name: a, port: 80}]}]
`)
	_, sts := Translate(rs)
	if len(sts) != 1 {
		t.Fatalf("want one status (the Gateway parent is not Sigil's): %+v", sts)
	}
	st := sts[0]
	conds := st.Status.Conditions
	// The parentRef is echoed as written (route() gives no port's
	// defaults: group, kind, namespace and port as in the document).
	if ref := st.Status.ParentRef; ref.Namespace == nil || *ref.Namespace != "shop" || ref.SectionName != nil || ref.Port == nil {
		t.Errorf("parentRef not as written: %+v", ref)
	}
	if st.Name != "r" || st.Status.ControllerName != ControllerName || len(conds) != 2 ||
		conds[0].Type != "Accepted" || conds[0].Status != metav1.ConditionTrue ||
		conds[1].Type != "ResolvedRefs" || conds[1].Status != metav1.ConditionFalse || conds[1].Reason != "RefNotPermitted" {
		t.Errorf("status: %+v", st)
	}
	err := Decoder{}.decodeErr(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"r","namespace":"shop","generation":3},"spec":{"parentRefs":[{"group":"","kind":"Service","name":"api"}],"rules":[{"retry":{"attempts":1}}]}}`)
	refused := Refused("HTTPRoute", []byte(`{"metadata":{"name":"r","namespace":"shop","generation":3},"spec":{"parentRefs":[{"group":"","kind":"Service","name":"api"}]}}`), err)
	if len(refused) == 1 && refused[0].Status.ParentRef.Namespace != nil {
		t.Errorf("refused route's parentRef gained a namespace it was not written with: %+v", refused[0].Status.ParentRef)
	}
	if len(refused) != 1 || refused[0].Status.Conditions[0].Status != metav1.ConditionFalse ||
		refused[0].Status.Conditions[0].Reason != "UnsupportedValue" || refused[0].Status.Conditions[0].ObservedGeneration != 3 ||
		!strings.Contains(refused[0].Status.Conditions[0].Message, "retry") {
		t.Errorf("refused: %+v", refused)
	}
}

// decodeErr is DecodeRoute's error for an HTTPRoute document.
func (d Decoder) decodeErr(js string) error {
	_, err := d.DecodeRoute("HTTPRoute", []byte(js))
	return err
}

func TestStoredFormRoundTrip(t *testing.T) {
	rs := parse(t, strings.Replace(route("shop", "r", `  - backendRefs: [{name: a, port: 80}]`), "metadata: {", `metadata: {creationTimestamp: "2026-01-01T00:00:00Z", generation: 4, `, 1))
	spec, err := rs[0].Spec()
	if err != nil {
		t.Fatal(err)
	}
	back, err := FromSpec(rs[0].Kind, rs[0].Namespace, rs[0].Name, spec)
	if err != nil {
		t.Fatal(err)
	}
	r := back.Route.(*Route)
	if r.Generation != 4 || r.Created.IsZero() {
		t.Errorf("metadata lost: %+v", r)
	}
	again, _ := back.Spec()
	if string(again) != string(spec) {
		t.Errorf("stored form changed:\n%s\n%s", spec, again)
	}
}

// An object as the API server returns it (what the CRD watcher hands
// over: managedFields, resourceVersion, status of other controllers) is
// read like the document applied.
func TestDecodeKubernetesObject(t *testing.T) {
	obj := `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute",
"metadata":{"name":"r","namespace":"shop","uid":"0b0c","resourceVersion":"42","generation":2,"creationTimestamp":"2026-11-30T07:00:00Z",
 "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}"},
 "managedFields":[{"manager":"kubectl","operation":"Apply","apiVersion":"gateway.networking.k8s.io/v1","time":"2026-11-30T07:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{}}}]},
"spec":{"parentRefs":[{"group":"","kind":"Service","name":"api"}],"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"group":"","kind":"Service","name":"api","port":80,"weight":1}]}]},
"status":{"parents":[{"parentRef":{"name":"gw"},"controllerName":"example.com/gateway","conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"","lastTransitionTime":"2026-11-30T07:00:00Z","observedGeneration":2}]}]}}`
	rs := parse(t, obj)
	r := rs[0].Route.(*Route)
	if rs[0].Ref() != "HTTPRoute shop/r" || r.Generation != 2 || r.Created.IsZero() {
		t.Fatalf("read %s, generation %d, created %v", rs[0].Ref(), r.Generation, r.Created)
	}
	vss, sts := Translate(rs)
	if len(vss) != 1 || len(sts) != 1 || sts[0].Status.Conditions[0].ObservedGeneration != 2 {
		t.Errorf("translated %d VirtualServices, statuses %+v", len(vss), sts)
	}
}
