package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

// The admin API reads its own JSON case-sensitively: "Files" is not
// "files".
func TestStrictAdminBodyCaseSensitive(t *testing.T) {
	s, _ := storeServer(t)
	h := s.adminHandler()
	tests := []struct {
		body   string
		status int
		want   string
	}{
		{`{"Files":[{"name":"x.yaml","content":"x"}]}`, http.StatusBadRequest, `at Files: field names are case-sensitive`},
		{`{"files":[{"Name":"x.yaml","content":"x"}]}`, http.StatusBadRequest, `at files[0].Name`},
		{`{"files":[],"dry_run":true} {}`, http.StatusBadRequest, "data after the JSON value"},
		{`{"files":[{"name":"x.yaml","content":"` + strings.ReplaceAll(strings.ReplaceAll(vsYAML("a", 1), "\n", `\n`), `"`, `\"`) + `"}]}`, http.StatusOK, "created"},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/config", strings.NewReader(tt.body)))
		if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) {
			t.Errorf("%s: %d %s, want %d and %q", tt.body, w.Code, w.Body, tt.status, tt.want)
		}
	}
}

// A route to a subset no DestinationRule defines is applied with a
// warning (Istio accepts it); deleting the DestinationRule a route
// needs warns too.
func TestUndefinedSubsetIsAWarning(t *testing.T) {
	s, _ := storeServer(t)
	h := s.adminHandler()
	apply := func(yaml string) adminv1.ApplyResponse { return applyYAML(t, h, yaml) }
	vs := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: [api]\n  http:\n  - route:\n    - destination: {host: api, subset: v2}\n"
	resp := apply(vs)
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], `VirtualService default/api: spec.http[0].route[0].destination.subset: subset "v2" of api is not defined`) {
		t.Fatalf("warnings %q", resp.Warnings)
	}
	dr := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\nspec:\n  host: api\n  subsets:\n  - name: v2\n    labels: {version: v2}\n"
	if resp := apply(dr); len(resp.Warnings) != 0 {
		t.Fatalf("warnings once defined: %q", resp.Warnings)
	}
	other := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web]\n  http:\n  - route:\n    - destination: {host: web}\n"
	if resp := apply(other); len(resp.Warnings) != 0 {
		t.Fatalf("warnings about resources not applied: %q", resp.Warnings)
	}
	body, _ := json.Marshal(adminv1.DeleteRequest{Resources: []adminv1.ResourceKey{{Kind: "DestinationRule", Namespace: "default", Name: "api"}}})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/config/delete", strings.NewReader(string(body))))
	var del adminv1.DeleteResponse
	if err := json.Unmarshal(w.Body.Bytes(), &del); w.Code != http.StatusOK || err != nil || len(del.Warnings) != 1 || !strings.Contains(del.Warnings[0], `subset "v2"`) {
		t.Fatalf("delete: %d %s", w.Code, w.Body)
	}
}

// TestUndefinedDelegateIsAWarning: a route delegating to a VirtualService
// that is not there is accepted (Istio leaves the route out) with a
// warning, which goes once the delegate is applied.
func TestUndefinedDelegateIsAWarning(t *testing.T) {
	s, _ := storeServer(t)
	h := s.adminHandler()
	apply := func(yaml string) adminv1.ApplyResponse { return applyYAML(t, h, yaml) }
	root := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: [api]\n  http:\n  - delegate: {name: api-routes}\n"
	resp := apply(root)
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "VirtualService default/api: spec.http[0].delegate: VirtualService default/api-routes is not a delegate VirtualService") {
		t.Fatalf("warnings %q", resp.Warnings)
	}
	delegate := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api-routes}\nspec:\n  http:\n  - route:\n    - destination: {host: api}\n"
	if resp := apply(delegate); len(resp.Warnings) != 0 {
		t.Fatalf("warnings once the delegate is there: %q", resp.Warnings)
	}
}

// applyYAML applies yaml through the admin handler h and returns its
// answer, failing t unless it is 200.
func applyYAML(t *testing.T, h http.Handler, yaml string) adminv1.ApplyResponse {
	t.Helper()
	body, _ := json.Marshal(adminv1.ApplyRequest{Files: []adminv1.File{{Name: "x.yaml", Content: yaml}}})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/config", strings.NewReader(string(body))))
	if w.Code != http.StatusOK {
		t.Fatalf("apply: %d %s", w.Code, w.Body)
	}
	var resp adminv1.ApplyResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestUnreachableOutsideHostIsAWarning: a route to a host outside the
// mesh that no DestinationRule says how to reach is applied with a
// warning naming the host and what to add (the sidecar answers 502);
// the warning goes once a DestinationRule for the host is there.
func TestUnreachableOutsideHostIsAWarning(t *testing.T) {
	s, _ := storeServer(t)
	h := s.adminHandler()
	vs := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: dev.reviews.com}\n"
	resp := applyYAML(t, h, vs)
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "VirtualService default/reviews: spec.http[0].route[0].destination.host: dev.reviews.com is outside the mesh and no DestinationRule says how to reach it") {
		t.Fatalf("warnings %q", resp.Warnings)
	}
	dr := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dev}\nspec:\n  host: dev.reviews.com\n  trafficPolicy: {tls: {mode: DISABLE}}\n"
	if resp := applyYAML(t, h, dr); len(resp.Warnings) != 0 {
		t.Fatalf("warnings once a rule names the host: %q", resp.Warnings)
	}
}

// TestSharedHostIsAWarning: a second VirtualService of one namespace for
// a host another already routes is applied with a warning naming the one
// that routes it at the sidecars (Istio's IST0109: sidecars do not merge
// them); none for the same host in another namespace, which routes it for
// its own sidecars.
func TestSharedHostIsAWarning(t *testing.T) {
	s, _ := storeServer(t)
	h := s.adminHandler()
	vs := func(ns, name string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n  hosts: [api.prod.svc.cluster.local]\n  http:\n  - route:\n    - destination: {host: api.prod.svc.cluster.local}\n"
	}
	if resp := applyYAML(t, h, vs("prod", "b")); len(resp.Warnings) != 0 {
		t.Fatalf("warnings for the first: %q", resp.Warnings)
	}
	if resp := applyYAML(t, h, vs("staging", "a")); len(resp.Warnings) != 0 {
		t.Fatalf("warnings for another namespace's: %q", resp.Warnings)
	}
	resp := applyYAML(t, h, vs("prod", "a"))
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], `VirtualService prod/b: spec.hosts[0]: "api.prod.svc.cluster.local" is routed by VirtualService prod/a at the sidecars`) {
		t.Fatalf("warnings %q", resp.Warnings)
	}
}
