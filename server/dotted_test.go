package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

// TestTwoLabelHostIsAWarning: a resource's host of two labels that also
// parses as name.namespace (reviews.prod) is applied as a host outside the
// mesh, as Istio reads dotted names, with a warning saying how to name
// the service (also under --dry-run); httpbin.org, which a DestinationRule
// says how to reach outside the mesh, draws none.
func TestTwoLabelHostIsAWarning(t *testing.T) {
	s, _ := storeServer(t)
	h := s.adminHandler()
	const want = "VirtualService demo/r: spec.http[0].route[0].destination.host: host reviews.prod is read as a host outside the mesh, as Istio reads dotted names; for the service reviews in namespace prod write reviews.prod.svc.cluster.local (or reviews in a resource of namespace prod)"
	vs := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: demo}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews.prod}\n"
	for _, dry := range []bool{true, false} {
		body, _ := json.Marshal(adminv1.ApplyRequest{DryRun: dry, Files: []adminv1.File{{Name: "x.yaml", Content: vs}}})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/config", strings.NewReader(string(body))))
		var resp adminv1.ApplyResponse
		if err := json.Unmarshal(w.Body.Bytes(), &resp); w.Code != http.StatusOK || err != nil {
			t.Fatalf("dry run %v: %d %s", dry, w.Code, w.Body)
		}
		if !slices.Contains(resp.Warnings, want) {
			t.Errorf("dry run %v: warnings %q, want %q", dry, resp.Warnings, want)
		}
	}
	dr := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: httpbin, namespace: demo}\nspec:\n  host: httpbin.org\n  trafficPolicy: {tls: {mode: DISABLE}}\n"
	if resp := applyYAML(t, h, dr); len(resp.Warnings) != 0 {
		t.Errorf("a DestinationRule reaching httpbin.org: warnings %q, want none", resp.Warnings)
	}
	fqdn := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: demo}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews.prod.svc.cluster.local}\n"
	if resp := applyYAML(t, h, fqdn); len(resp.Warnings) != 0 {
		t.Errorf("the service's FQDN: warnings %q, want none", resp.Warnings)
	}
}
