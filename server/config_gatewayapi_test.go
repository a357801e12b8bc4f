package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

const gammaRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: api}]
  rules:
  - backendRefs: [{name: api-v1, port: 80, weight: 80}, {name: api-v2, port: 80, weight: 20}, {name: gone, namespace: elsewhere, port: 80}]
`

// Gateway API routes go through the one apply path: stored and listed as
// themselves, sent to agents as the VirtualServices they make, and gone
// from the agents when deleted.
func TestGatewayAPIRoutesApplyAsVirtualServices(t *testing.T) {
	ctx := context.Background()
	s, _ := storeServer(t)
	h := s.adminHandler()
	do := func(method, path string, body any) *httptest.ResponseRecorder {
		t.Helper()
		js, _ := json.Marshal(body)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(string(js))))
		return w
	}
	apply := func(yaml string) *httptest.ResponseRecorder {
		return do(http.MethodPost, "/v1/config", adminv1.ApplyRequest{Files: []adminv1.File{{Name: "r.yaml", Content: yaml}}})
	}
	snapKeys := func() string {
		t.Helper()
		snap, err := s.configSnapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range snap.Resources {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return strings.Join(keys, " ")
	}

	w := apply(gammaRoute)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "ResolvedRefs=False (RefNotPermitted)") {
		t.Fatalf("apply: %d %s (want OK with the unresolved backend as a warning)", w.Code, w.Body)
	}
	if got := snapKeys(); got != "VirtualService/shop/gamma.api.shop" {
		t.Errorf("agents get %q, want the VirtualService made of the route only", got)
	}
	w = do(http.MethodGet, "/v1/config/httproutes", nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"name":"split"`) {
		t.Errorf("sigil get httproutes: %d %s", w.Code, w.Body)
	}

	w = apply(strings.Replace(gammaRoute, "rules:", "rules:\n  - retry: {attempts: 2}", 1))
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "spec.rules[0].retry") {
		t.Errorf("unsupported field: %d %s", w.Code, w.Body)
	}
	w = apply(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: gamma.api.shop, namespace: shop}
spec: {hosts: [api], http: [{route: [{destination: {host: api}}]}]}
`)
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "metadata.name") {
		t.Errorf("a VirtualService named as a derived one: %d %s", w.Code, w.Body)
	}

	w = do(http.MethodPost, "/v1/config/delete", adminv1.DeleteRequest{Resources: []adminv1.ResourceKey{{Kind: "HTTPRoute", Namespace: "shop", Name: "split"}}})
	if w.Code != http.StatusOK {
		t.Fatalf("delete: %d %s", w.Code, w.Body)
	}
	if got := snapKeys(); got != "" {
		t.Errorf("after delete agents get %q", got)
	}
}
