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
	"github.com/sigil-mesh/sigil/server/registry"
)

// A legacy record whose stored spec is not JSON (a raw ESC in a string,
// written before today's validation) neither empties the listing nor
// makes the server answer 200 with no body: sigil get lists every
// resource, the broken one with its stored bytes as a JSON string, so it
// can be seen and deleted.
func TestLegacyRecordListing(t *testing.T) {
	ctx := context.Background()
	s, store := storeServer(t)
	bad := `{"hosts":["web` + "\x1b[31m" + `"]}`
	rs := []registry.StoredResource{
		{Kind: "VirtualService", Namespace: "default", Name: "evil\x1b]0;x\x07", Spec: []byte(bad)},
		{Kind: "VirtualService", Namespace: "default", Name: "good", Spec: []byte(`{"hosts":["api"]}`)},
	}
	if _, _, err := store.ApplyResources(ctx, rs, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	s.adminHandler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/config/virtualservices", nil))
	var got []registry.StoredResource
	if err := json.Unmarshal(w.Body.Bytes(), &got); w.Code != http.StatusOK || err != nil {
		t.Fatalf("GET: %d %q: %v", w.Code, w.Body, err)
	}
	if len(got) != 2 {
		t.Fatalf("%d resources listed, want 2", len(got))
	}
	for _, r := range got {
		if strings.HasPrefix(r.Name, "evil") {
			var spec string
			if err := json.Unmarshal(r.Spec, &spec); err != nil || spec != bad {
				t.Errorf("broken spec listed as %s, want its bytes as a JSON string", r.Spec)
			}
		}
	}
}

// storeServer is a Server over a fresh store and audit trail in a
// temporary directory, for tests of the admin API's handlers.
func storeServer(t *testing.T) (*Server, *registry.Store) {
	t.Helper()
	dir := t.TempDir()
	store, err := registry.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	trail, err := audit.Open(filepath.Join(dir, "audit.log"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trail.Close() })
	return &Server{cfg: &checked{Config: Config{MaxResourceBytes: DefaultMaxResourceBytes, MaxConfigBytes: DefaultMaxConfigBytes}}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		store: store, audit: trail, changes: newBroadcaster(), now: time.Now}, store
}
