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
	s := &Server{cfg: &checked{Config: Config{MaxResourceBytes: 4096, MaxConfigBytes: 10000}}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		store: store, audit: trail, changes: newBroadcaster(), now: time.Now}
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
		body, _ := json.Marshal(ApplyRequest{Files: []File{{Name: "x.yaml", Content: tt.yaml}}})
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
