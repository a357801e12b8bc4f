package registry

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestResourcesAndProxies(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	vs := StoredResource{Kind: "VirtualService", Namespace: "default", Name: "api", Spec: json.RawMessage(`{"hosts":["api"]}`)}
	res, v, err := s.ApplyResources(ctx, []StoredResource{vs}, true, now)
	if err != nil || res[0].Action != Created || v != 0 {
		t.Fatalf("dry run: %+v %d %v", res, v, err)
	}
	if rs, _, _ := s.ListResources(ctx, ""); len(rs) != 0 {
		t.Fatal("dry run stored something")
	}
	if res, v, _ = s.ApplyResources(ctx, []StoredResource{vs}, false, now); res[0].Action != Created || v != 1 {
		t.Fatalf("apply: %+v %d", res, v)
	}
	if res, v, _ = s.ApplyResources(ctx, []StoredResource{vs}, false, now); res[0].Action != Unchanged || v != 1 {
		t.Fatalf("re-apply: %+v %d (an unchanged apply must not move the version)", res, v)
	}
	vs.Spec = json.RawMessage(`{"hosts":["api","api2"]}`)
	if res, v, _ = s.ApplyResources(ctx, []StoredResource{vs}, false, now); res[0].Action != Configured || v != 2 {
		t.Fatalf("change: %+v %d", res, v)
	}
	if v, err := s.DeleteResource(ctx, "VirtualService", "default", "api"); err != nil || v != 3 {
		t.Fatalf("delete: %d %v", v, err)
	}

	p := ProxyRecord{ProxyID: "p1", SPIFFEID: "spiffe://td/a", Service: "api", Address: "10.0.0.1:15006", Labels: map[string]string{"version": "v1"}, ConfigVersion: 3}
	changed, rev, err := s.ReplaceProxies(ctx, "agent1", []ProxyRecord{p}, now)
	if err != nil || !changed || rev != 1 {
		t.Fatalf("first report: %v %d %v", changed, rev, err)
	}
	p.ConfigVersion = 4
	if changed, _, _ = s.ReplaceProxies(ctx, "agent1", []ProxyRecord{p}, now); changed {
		t.Fatal("a new config version alone counted as an endpoint change")
	}
	// The namespace is part of the endpoint: stored, listed, and a move
	// from one namespace to another is a change.
	p.Namespace = "prod"
	if changed, _, _ = s.ReplaceProxies(ctx, "agent1", []ProxyRecord{p}, now); !changed {
		t.Fatal("a namespace change did not count as an endpoint change")
	}
	if ps, _, _ := s.ListProxies(ctx); len(ps) != 1 || ps[0].Namespace != "prod" {
		t.Fatalf("listed %+v, want namespace prod", ps)
	}
	// An agent that stops reporting loses its endpoints.
	if n, _ := s.ExpireProxies(ctx, now.Add(time.Second)); n != 1 {
		t.Fatalf("expired %d", n)
	}
	if ps, rev, _ := s.ListProxies(ctx); len(ps) != 0 || rev != 3 {
		t.Fatalf("after expiry: %v, revision %d", ps, rev)
	}
}

// A batch delete is one transaction: a missing key removes nothing.
func TestDeleteResourcesBatch(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var rs []StoredResource
	var keys []ResourceKey
	for _, name := range []string{"a", "b", "c"} {
		rs = append(rs, StoredResource{Kind: "VirtualService", Namespace: "default", Name: name, Spec: json.RawMessage(`{}`)})
		keys = append(keys, ResourceKey{Kind: "VirtualService", Namespace: "default", Name: name})
	}
	if _, _, err := s.ApplyResources(ctx, rs, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		keys    []ResourceKey
		wantErr bool
		left    int
		version int64
	}{
		{"one missing", append(keys[:1:1], ResourceKey{Kind: "VirtualService", Namespace: "default", Name: "zz"}), true, 3, 1},
		{"two at once", keys[:2], false, 1, 2},
		{"the last", keys[2:], false, 0, 3},
	}
	for _, tt := range tests {
		v, err := s.DeleteResources(ctx, tt.keys)
		if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrNotFound)) {
			t.Fatalf("%s: %v", tt.name, err)
		}
		left, version, _ := s.ListResources(ctx, "")
		if len(left) != tt.left || version != tt.version || (err == nil && v != tt.version) {
			t.Fatalf("%s: %d left at version %d (returned %d), want %d at %d", tt.name, len(left), version, v, tt.left, tt.version)
		}
	}
}

// A resource's origin is stored, listed, and part of what makes an apply
// a change; a data dir made before the column existed gets it, empty.
func TestResourceOrigin(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	// As a data dir from before origins: the column dropped, one row.
	if _, err := s.db.ExecContext(ctx, `ALTER TABLE resources DROP COLUMN origin`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO resources (kind, namespace, name, spec, version, updated_at) VALUES ('VirtualService', 'default', 'old', '{}', 1, 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(ctx, dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	vs := StoredResource{Kind: "VirtualService", Namespace: "default", Name: "api", Spec: json.RawMessage(`{"hosts":["api"]}`)}
	steps := []struct {
		origin, action string
	}{
		{"", Created},
		{"kubernetes/VirtualService.networking.istio.io/default/api", Configured},
		{"kubernetes/VirtualService.networking.istio.io/default/api", Unchanged},
	}
	for _, st := range steps {
		vs.Origin = st.origin
		res, _, err := s.ApplyResources(ctx, []StoredResource{vs}, false, now)
		if err != nil || res[0].Action != st.action {
			t.Fatalf("origin %q: %+v %v, want %s", st.origin, res, err, st.action)
		}
	}
	rs, _, err := s.ListResources(ctx, "")
	if err != nil || len(rs) != 2 {
		t.Fatalf("%+v %v", rs, err)
	}
	got := map[string]string{rs[0].Name: rs[0].Origin, rs[1].Name: rs[1].Origin}
	if got["old"] != "" || got["api"] != steps[2].origin {
		t.Errorf("origins %v", got)
	}
}
