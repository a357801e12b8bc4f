package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/server/registry"
)

// A stored resource that a rule added since refuses blocks nothing else
// and can be fixed by applying a good one over it.
func TestStoredResourceRefusedByNewerRulesCanBeReplaced(t *testing.T) {
	ctx := context.Background()
	s, store := storeServer(t)
	legacy := registry.StoredResource{Kind: "VirtualService", Namespace: "default", Name: "old",
		Spec: []byte(`{"hosts":["api"],"http":[{"redirect":{"uri":"new"}}]}`)}
	if _, _, err := store.ApplyResources(ctx, []registry.StoredResource{legacy}, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	good := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: old}\nspec: {hosts: [api], http: [{redirect: {uri: /new}}]}\n"
	b, _ := json.Marshal(adminv1.ApplyRequest{Files: []adminv1.File{{Name: "t.yaml", Content: good}}})
	w := httptest.NewRecorder()
	s.adminHandler().ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/config", strings.NewReader(string(b))))
	if w.Code != http.StatusOK {
		t.Fatalf("fixing the stored resource: %d %s", w.Code, w.Body)
	}
	snap, err := s.configSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, sent := snap.Resources["VirtualService/default/old"]; !sent {
		t.Fatalf("the fixed resource is not delivered: %d resources", len(snap.Resources))
	}
}
