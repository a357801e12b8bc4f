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

func vsYAML(name string, pad int) string {
	return `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ` + name + `, namespace: default}
spec:
  hosts: [` + name + `]
  http:
  - headers: {request: {set: {x-pad: "` + strings.Repeat("x", pad) + `"}}}
    route: [{destination: {host: ` + name + `}}]
`
}

// What cannot be delivered is refused at apply, naming the size and the
// limit, and nothing of the apply is stored.
func TestConfigApplyRefusesUndeliverable(t *testing.T) {
	ctx := context.Background()
	s, store := storeServer(t)
	s.cfg.MaxResourceBytes, s.cfg.MaxConfigBytes = 4096, 10000
	h := s.adminHandler()
	tests := []struct {
		name    string
		yaml    string
		status  int
		wantErr []string
		stored  int
	}{
		{"fits", vsYAML("a", 3000), http.StatusOK, nil, 1},
		{"one resource over the limit", vsYAML("b", 10) + vsYAML("c", 5000), http.StatusBadRequest,
			[]string{"VirtualService default/c: encoded size 5", "exceeds the per-resource limit of 4096 bytes (--max-resource-bytes)"}, 1},
		{"total over the budget", vsYAML("d", 3000) + vsYAML("e", 3000) + vsYAML("f", 3000), http.StatusBadRequest,
			[]string{"the total limit is 10000 bytes (--max-config-bytes)"}, 1},
		{"replacing keeps the total", vsYAML("a", 3500) + vsYAML("g", 3000), http.StatusOK, nil, 2},
	}
	for _, tt := range tests {
		body, _ := json.Marshal(adminv1.ApplyRequest{Files: []adminv1.File{{Name: "x.yaml", Content: tt.yaml}}})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/config", strings.NewReader(string(body))))
		if w.Code != tt.status {
			t.Fatalf("%s: status %d: %s", tt.name, w.Code, w.Body)
		}
		for _, want := range tt.wantErr {
			if !strings.Contains(w.Body.String(), want) {
				t.Errorf("%s: %s does not say %q", tt.name, w.Body, want)
			}
		}
		if rs, _, _ := store.ListResources(ctx, ""); len(rs) != tt.stored {
			t.Errorf("%s: %d stored, want %d", tt.name, len(rs), tt.stored)
		}
	}
}

// A stored resource that no longer validates (the rules grew stricter)
// blocks nothing: other applies go through, it is not sent to agents, and
// it can be deleted.
func TestConfigStoredInvalidBlocksNothing(t *testing.T) {
	ctx := context.Background()
	s, store := storeServer(t)
	if _, _, err := store.ApplyResources(ctx, []registry.StoredResource{{Kind: "VirtualService", Namespace: "default", Name: "old", Spec: []byte(`{"hosts":["old"]}`)}}, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	h := s.adminHandler()
	steps := []struct {
		method, path, body string
		status             int
	}{
		{http.MethodPost, "/v1/config", vsYAML("new", 10), http.StatusOK},
		{http.MethodDelete, "/v1/config/virtualservice/default/old", "", http.StatusOK},
	}
	for i, st := range steps {
		body := st.body
		if st.method == http.MethodPost {
			b, _ := json.Marshal(adminv1.ApplyRequest{Files: []adminv1.File{{Name: "x.yaml", Content: body}}})
			body = string(b)
		}
		if i == 1 {
			snap, err := s.configSnapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, sent := snap.Resources["VirtualService/default/old"]; sent || len(snap.Resources) != 1 {
				t.Fatalf("snapshot holds %d resources, the invalid one: %v", len(snap.Resources), sent)
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(st.method, st.path, strings.NewReader(body)))
		if w.Code != st.status {
			t.Fatalf("%s %s: %d %s", st.method, st.path, w.Code, w.Body)
		}
	}
}
