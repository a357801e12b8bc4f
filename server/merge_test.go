package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/registry"
)

// A stored resource that a rule added since refuses blocks nothing else
// and can be fixed by applying a good one over it.
func TestStoredResourceRefusedByNewerRulesCanBeReplaced(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := registry.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	trail, err := audit.Open(filepath.Join(dir, "audit.log"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()
	s := &Server{cfg: &checked{Config: Config{MaxResourceBytes: DefaultMaxResourceBytes, MaxConfigBytes: DefaultMaxConfigBytes}}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		store: store, audit: trail, changes: newBroadcaster(), now: time.Now}
	legacy := registry.StoredResource{Kind: "VirtualService", Namespace: "default", Name: "old",
		Spec: []byte(`{"hosts":["api"],"http":[{"redirect":{"uri":"new"}}]}`)}
	if _, _, err := store.ApplyResources(ctx, []registry.StoredResource{legacy}, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	good := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: old}\nspec: {hosts: [api], http: [{redirect: {uri: /new}}]}\n"
	b, _ := json.Marshal(ApplyRequest{Files: []File{{Name: "t.yaml", Content: good}}})
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
