package audit

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A trail's intents are pending until a settling record names them; a
// run of intents is settled by one record.
func TestAuditSettlesIntents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	one, err := l.Begin(Event{Type: EntryCreated})
	if err != nil {
		t.Fatal(err)
	}
	run, err := l.Begin(Event{Type: "config.applied"}, Event{Type: "config.applied"}, Event{Type: "config.applied"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Begin(Event{Type: EntryDeleted}); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(Event{Type: X509SVIDIssued}); err != nil {
		t.Fatal(err)
	}
	if got := len(l.Pending()); got != 5 {
		t.Fatalf("%d pending, want 5", got)
	}
	if err := one.Settle(nil); err != nil {
		t.Fatal(err)
	}
	if err := run.Settle(os.ErrPermission); err != nil {
		t.Fatal(err)
	}
	l.Close()
	f, _ := os.Open(path)
	defer f.Close()
	sum, err := Check(f)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Committed != 1 || sum.Aborted != 1 || len(sum.Aborts) != 1 || sum.Aborts[0].Details[DetailIntentCount] != "3" || len(sum.Pending) != 1 || sum.Pending[0].Type != EntryDeleted {
		t.Fatalf("summary %+v", sum)
	}
	// Reopened, the log knows what is still pending.
	l, err = Open(path, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if p := l.Pending(); len(p) != 1 || p[0].Seq != 5 {
		t.Fatalf("pending after reopen: %+v", p)
	}
}
