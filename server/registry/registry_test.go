package registry

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/selector"
)

func TestEntriesAndTokens(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	uid := selector.Unix(selector.UnixUID, "1000")
	e, err := s.CreateEntry(ctx, Entry{SPIFFEID: "spiffe://td/a", ParentID: "spiffe://td/sigil/agent/join_token/n1", Selectors: []selector.Selector{uid}, X509TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateEntry(ctx, Entry{SPIFFEID: "spiffe://td/a", ParentID: e.ParentID, Selectors: []selector.Selector{uid}}, now); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := s.CreateEntry(ctx, Entry{SPIFFEID: "spiffe://td/b", ParentID: "spiffe://td/sigil/agent/join_token/n2", Selectors: []selector.Selector{uid}}, now); err != nil {
		t.Fatal(err)
	}
	list, rev, err := s.ListEntries(ctx, e.ParentID)
	if err != nil || len(list) != 1 || list[0].ID != e.ID || list[0].X509TTL != time.Hour || list[0].Selectors[0] != uid {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if rev < 2 {
		t.Fatalf("revision %d", rev)
	}
	if _, err := s.DeleteEntry(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteEntry(ctx, e.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	_, rev2, _ := s.ListEntries(ctx, "")
	if rev2 <= rev {
		t.Fatalf("revision did not move: %d → %d", rev, rev2)
	}

	if err := s.CreateJoinToken(ctx, "h1", "n1", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateJoinToken(ctx, "h2", "n2", now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if node, err := s.UseJoinToken(ctx, "h1", now); err != nil || node != "n1" {
		t.Fatalf("use: %q %v", node, err)
	}
	if _, err := s.UseJoinToken(ctx, "h1", now); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("reuse: %v", err)
	}
	if _, err := s.UseJoinToken(ctx, "h2", now); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired: %v", err)
	}
	if _, err := s.UseJoinToken(ctx, "nope", now); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	s.Close()

	// Everything survives a reopen, and the file is owner-only.
	s, err = Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	all, _, _ := s.ListEntries(ctx, "")
	if len(all) != 1 {
		t.Fatalf("after reopen %d entries", len(all))
	}
	st, _ := os.Stat(filepath.Join(dir, "sigil.db"))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("db mode %v", st.Mode().Perm())
	}
}

func TestDeleteAgentTakesItsEndpoints(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, id := range []string{"spiffe://td/sigil/agent/join_token/n1", "spiffe://td/sigil/agent/join_token/n2"} {
		if err := s.SaveAgent(ctx, Agent{SPIFFEID: id, Attestor: "join_token", Node: "n", Serial: "01", ExpiresAt: now.Add(time.Hour), AttestedAt: now}, now); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.ReplaceProxies(ctx, id, []ProxyRecord{{ProxyID: "p", SPIFFEID: "spiffe://td/web", Service: "web", Address: "127.0.0.1:1"}}, now); err != nil {
			t.Fatal(err)
		}
	}
	_, before, _ := s.ListProxies(ctx)
	if err := s.DeleteAgent(ctx, "spiffe://td/sigil/agent/join_token/n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAgent(ctx, "spiffe://td/sigil/agent/join_token/n1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("evicted agent still there: %v", err)
	}
	ps, after, err := s.ListProxies(ctx)
	if err != nil || len(ps) != 1 || ps[0].AgentID != "spiffe://td/sigil/agent/join_token/n2" || after <= before {
		t.Fatalf("proxies %+v, revision %d -> %d, %v", ps, before, after, err)
	}
	if err := s.DeleteAgent(ctx, "spiffe://td/sigil/agent/join_token/n1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}
