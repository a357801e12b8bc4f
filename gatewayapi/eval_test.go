package gatewayapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/traffic"
)

// outcome is what a sidecar does with one request under the translated
// VirtualServices, read from the same table the sidecar compiles.
type outcome struct {
	Backends string // "svc.ns:port=weight,..." in order, or "" when none
	Status   int    // a direct answer, redirect or certain abort; 0: forwarded
	Path     string // the path forwarded (after rewrites)
	Location string // a redirect's Location
	Abort    float64
	ReqSet   string // request headers set, "k=v;..."
	RespSet  string // response headers set
}

// evaluate runs a request from a caller in namespace callerNS to svc
// ("name.ns") on port through yamlDocs translated. No VirtualService
// for the service: Status 0, Backends "default" (the service itself).
// A VirtualService without a matching route: 404, as Istio answers.
func evaluate(t *testing.T, resources []traffic.Resource, callerNS, svc string, port uint32, method, target string, hdr map[string]string) outcome {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	host, _, _ := strings.Cut(svc, ".")
	r.Host = host
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	m, routed, ok := matchRequest(resources, callerNS, svc, port, r)
	if !routed {
		return outcome{Backends: "default", Path: r.URL.Path}
	}
	if !ok {
		return outcome{Status: http.StatusNotFound}
	}
	var o outcome
	if loc, code, ok := m.RedirectLocation(r); ok {
		return outcome{Status: code, Location: loc}
	}
	if m.Direct != nil {
		return outcome{Status: m.Direct.Status}
	}
	var ds []string
	for _, d := range m.Dests {
		ds = append(ds, fmt.Sprintf("%s.%s:%d=%d", d.Service, d.Namespace, d.Port, d.Weight))
	}
	o.Backends = strings.Join(ds, ",")
	o.Path = m.RewritePath(r.URL.Path)
	if m.AbortHTTP != 0 {
		o.Abort = m.AbortPct
		if m.AbortPct >= 100 {
			o.Status = m.AbortHTTP
		}
	}
	if h := m.Headers; h != nil {
		o.ReqSet, o.RespSet = ops(h.Request), ops(h.Response)
	}
	return o
}

// matchRequest translates resources and matches r, from a sidecar in
// callerNS, to port of svc ("name.namespace"), as the sidecar does:
// routed is false when no VirtualService has routes for it there (the
// Service's own endpoints take it), ok false when one has but none
// matches (404).
func matchRequest(resources []traffic.Resource, callerNS, svc string, port uint32, r *http.Request) (m traffic.Matched, routed, ok bool) {
	vss, _ := Translate(resources)
	tab := traffic.CompileFor(1, traffic.SelectedFor(vss, callerNS, nil), callerNS)
	if !tab.HasRoutesAt(svc, port, nil) {
		return traffic.Matched{}, false, false
	}
	m, ok = tab.MatchPort(svc, port, r, nil)
	return m, true, ok
}

func ops(o *traffic.HeaderOperations) string {
	if o == nil {
		return ""
	}
	var parts []string
	for k, v := range o.Set {
		parts = append(parts, "set:"+k+"="+v)
	}
	for k, v := range o.Add {
		parts = append(parts, "add:"+k+"="+v)
	}
	for _, k := range o.Remove {
		parts = append(parts, "remove:"+k)
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

// parse reads docs, failing the test on an error.
func parse(t *testing.T, docs string) []traffic.Resource {
	t.Helper()
	rs, err := Parse([]byte(docs), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// route is an HTTPRoute in ns attached to api.shop (port 80) with rules.
func route(ns, name, rules string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: %s, namespace: %s}
spec:
  parentRefs: [{group: "", kind: Service, name: api, namespace: shop, port: 80}]
  rules:
%s
`, name, ns, rules)
}
