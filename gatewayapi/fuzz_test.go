package gatewayapi

import (
	"net/http/httptest"
	"testing"

	"github.com/sigil-mesh/sigil/traffic"
)

// FuzzTranslate feeds route documents to Parse and what it accepts to
// Translate, the stored-form round trip, and the table a sidecar
// compiles: no input may panic, and every VirtualService Translate makes
// must pass traffic's validation again (FromSpec) and answer a request.
func FuzzTranslate(f *testing.F) {
	for _, seed := range []string{
		route("shop", "r", `  - matches: [{path: {type: PathPrefix, value: /v1}, method: GET, headers: [{name: x, value: "1"}], queryParams: [{name: q, type: RegularExpression, value: "a.*"}]}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: h, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]
    backendRefs: [{name: a, port: 80, weight: 0}, {name: b, port: 80, weight: 5}, {name: c, namespace: o, port: 1}]`),
		route("web", "c", `  - filters: [{type: RequestRedirect, requestRedirect: {scheme: https, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]`),
		route("shop", "m", `  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, fraction: {numerator: 1, denominator: 3}}}, {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x]}}]
    timeouts: {request: 2s}
    backendRefs: [{name: a, port: 80}]`),
		`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"GRPCRoute","metadata":{"name":"g"},"spec":{"parentRefs":[{"group":"","kind":"Service","name":"s"}],"rules":[{"matches":[{"method":{"type":"RegularExpression","service":"a.*","method":"B"}}],"backendRefs":[{"name":"s","port":9}]}]}}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		rs, err := Parse([]byte(doc), "fuzz.yaml")
		if err != nil {
			return
		}
		for _, r := range rs {
			spec, err := r.Spec()
			if err != nil {
				t.Fatalf("%s: Spec: %v", r.Ref(), err)
			}
			if r.Route == nil {
				continue
			}
			if _, err := FromSpec(r.Kind, r.Namespace, r.Name, spec); err != nil {
				t.Fatalf("%s: accepted, but its stored form is not: %v", r.Ref(), err)
			}
		}
		vss, _ := Translate(rs)
		for _, vs := range vss {
			spec, _ := vs.Spec()
			if _, err := traffic.FromSpec(vs.Kind, vs.Namespace, vs.Name, spec); err != nil {
				t.Fatalf("%s does not validate again: %v", vs.Ref(), err)
			}
			tab := traffic.CompileFor(1, vss, vs.Namespace)
			r := httptest.NewRequest("GET", "/v1/x?q=abc", nil)
			key, _, _ := traffic.HostKey(vs.VS.Spec.Hosts[0], vs.Namespace)
			if m, ok := tab.MatchPort(key, 80, r, nil); ok {
				m.RewritePath(r.URL.Path)
				m.RedirectLocation(r)
			}
		}
	})
}
