package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/sigil-mesh/sigil/server/registry"
)

// A server killed between an intent and the store's answer leaves the
// intent unsettled. At start-up reconcileAudit asks the store and settles
// each: committed when the change is there, aborted when it is not; and a
// store write that fails settles its intent aborted at once.
func TestAuditReconcilesAfterCrashUnit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := registry.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	trail := filepath.Join(dir, "audit.log")
	log, err := audit.Open(trail, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil)), store: store, audit: log, now: time.Now}
	sel, err := selector.Parse("unix:uid:1")
	if err != nil {
		t.Fatal(err)
	}
	sels := []selector.Selector{sel}
	stored, err := store.CreateEntry(ctx, registry.Entry{SPIFFEID: "spiffe://example.org/a", ParentID: agent1, Selectors: sels}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateJoinToken(ctx, HashJoinToken("tok"), "node1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	spec := []byte(`{"hosts":["a"],"http":[{"route":[{"destination":{"host":"a"}}]}]}`)
	if _, _, err := store.ApplyResources(ctx, []registry.StoredResource{{Kind: "VirtualService", Namespace: "default", Name: "a", Spec: spec}}, false, time.Now()); err != nil {
		t.Fatal(err)
	}

	// The crash: intents written, outcomes never.
	tests := []struct {
		name      string
		event     audit.Event
		committed bool
	}{
		{"entry created, store has it", audit.Event{Type: audit.EntryCreated, Details: map[string]string{"entry_id": stored.ID}}, true},
		{"entry created, store never got it", audit.Event{Type: audit.EntryCreated, Details: map[string]string{"entry_id": "feed"}}, false},
		{"entry deleted, still there", audit.Event{Type: audit.EntryDeleted, Details: map[string]string{"entry_id": stored.ID}}, false},
		{"token created, stored", audit.Event{Type: audit.TokenCreated, Details: map[string]string{"token_sha256": HashJoinToken("tok")[:16]}}, true},
		{"token created, lost", audit.Event{Type: audit.TokenCreated, Details: map[string]string{"token_sha256": HashJoinToken("other")[:16]}}, false},
		{"config applied, stored", audit.Event{Type: auditConfigApplied, Subject: "VirtualService default/a", Details: map[string]string{"spec_sha256": specDigest(spec)}}, true},
		{"config applied, other spec stored", audit.Event{Type: auditConfigApplied, Subject: "VirtualService default/a", Details: map[string]string{"spec_sha256": specDigest([]byte("{}"))}}, false},
		{"config deleted, still there", audit.Event{Type: auditConfigDeleted, Subject: "VirtualService default/a"}, false},
		{"agent evicted, never attested", audit.Event{Type: audit.AgentEvicted, Subject: agent1}, true},
		{"ca authority prepared, state never saved", audit.Event{Type: audit.CAPrepared, Details: map[string]string{"id": "7", "kind": "intermediate"}}, false},
	}
	seqs := map[int64]int{}
	for i, tt := range tests {
		if _, err := log.Begin(tt.event); err != nil {
			t.Fatal(err)
		}
		seqs[int64(i+1)] = i
	}
	// The injected failure: the store refuses after the intent is written.
	injected := errors.New("injected: disk full")
	if err := s.audited(ctx, []audit.Event{{Type: audit.EntryCreated, Details: map[string]string{"entry_id": "beef"}}}, func() error { return injected }); !errors.Is(err, injected) {
		t.Fatalf("audited returned %v", err)
	}
	log.Close()

	// The restart.
	if s.audit, err = audit.Open(trail, time.Now); err != nil {
		t.Fatal(err)
	}
	defer s.audit.Close()
	if n := len(s.audit.Pending()); n != len(tests) {
		t.Fatalf("%d pending after the crash, want %d", n, len(tests))
	}
	if err := s.reconcileAudit(ctx); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(trail)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum, err := audit.Check(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Pending) != 0 {
		t.Fatalf("still pending: %+v", sum.Pending)
	}
	f.Seek(0, io.SeekStart)
	outcomes := settlements(t, f)
	for seq, i := range seqs {
		got, ok := outcomes[seq]
		if !ok || got.Type == audit.ActionCommitted != tests[i].committed {
			t.Errorf("%s: settled by %+v, want committed=%v", tests[i].name, got, tests[i].committed)
		}
	}
	if got := outcomes[int64(len(tests)+1)]; got.Type != audit.ActionAborted || got.Details[audit.DetailReason] != injected.Error() {
		t.Errorf("failed store write settled by %+v", got)
	}
}

// settlements maps each settled intent's seq to the record settling it.
func settlements(t *testing.T, r io.Reader) map[int64]audit.Event {
	t.Helper()
	out := map[int64]audit.Event{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if e.Type != audit.ActionCommitted && e.Type != audit.ActionAborted {
			continue
		}
		first, _ := strconv.ParseInt(e.Details[audit.DetailIntentSeq], 10, 64)
		n, _ := strconv.ParseInt(e.Details[audit.DetailIntentCount], 10, 64)
		for seq := first; seq < first+n; seq++ {
			out[seq] = e
		}
	}
	return out
}
