package export

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/auditstream/spool"
)

// flakySink fails its first fails calls, then keeps what it is given.
type flakySink struct {
	mu    sync.Mutex
	fails int
	got   []auditstream.Record
	calls int
	done  chan struct{}
	want  int
}

func (f *flakySink) Export(_ context.Context, recs []auditstream.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fails > 0 {
		f.fails--
		return errors.New("receiver down")
	}
	f.got = append(f.got, recs...)
	if len(f.got) == f.want {
		close(f.done)
	}
	return nil
}

func (f *flakySink) Close() error { return nil }

// A runner retries a failed batch from the same cursor and commits only
// what was delivered: every record arrives once, in order, and a runner
// started again on the spool sends nothing twice.
func TestRunnerRetriesAndCommitsOnlyDelivered(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{Writer: "w#1", Consumers: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1200 // more than one batch
	for range n {
		if err := sp.Append(&auditstream.Record{DecisionID: auditstream.NewID(), Sigil: auditstream.Meta{Type: auditstream.TypeDecision}}); err != nil {
			t.Fatal(err)
		}
	}
	sk := &flakySink{fails: 1, want: n, done: make(chan struct{})}
	r := New(sp, "x", sk, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() { r.Run(ctx); close(finished) }()
	<-sk.done
	cancel()
	<-finished
	for i, rec := range sk.got {
		if rec.Sigil.Seq != int64(i+1) {
			t.Fatalf("record %d has seq %d", i, rec.Sigil.Seq)
		}
	}
	if r.failed.Load() != 1 || r.exported.Load() != n {
		t.Fatalf("failed %d, exported %d", r.failed.Load(), r.exported.Load())
	}
	if lag := sp.Stats().Lag["x"]; lag != 0 {
		t.Fatalf("lag %d after everything was delivered", lag)
	}
	b, err := sp.Read("x", 10, 1<<20)
	if err != nil || len(b.Lines) != 0 {
		t.Fatalf("left to send: %d, %v", len(b.Lines), err)
	}
}

// An exporter's consumer name (its cursor file, its metrics' exporter
// label) is derived from its spec without the password: a short hash of
// the password would be guessable from /metrics, and rotating the
// receiver's password must not reset the exporter's cursor.
func TestConsumerNameLeavesOutThePassword(t *testing.T) {
	a, b := ConsumerName("https://sigil:old-secret@logs.example.org/logs"), ConsumerName("https://sigil:new-secret@logs.example.org/logs")
	if a != b {
		t.Fatalf("the password changes the consumer name: %s, %s", a, b)
	}
	if ConsumerName("https://logs.example.org/logs") == ConsumerName("https://logs.example.org/other") {
		t.Fatal("two receivers share a consumer name")
	}
}
