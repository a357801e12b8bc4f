package spool

import (
	"fmt"
	"sync"
	"testing"

	"github.com/sigil-mesh/sigil/auditstream"
)

// TestSpoolIngestConcurrentBatches: IngestChecked encodes a batch into a
// buffer it reuses across batches (ingestBufs). Batches of several
// writers ingested at once each reach the spool whole: every writer's
// chain reads back complete and in order, no line torn or mixed with
// another batch's.
func TestSpoolIngestConcurrentBatches(t *testing.T) {
	const writers, records, batch = 4, 200, 20
	lines := make([][][]byte, writers)
	for w := range writers {
		src, err := Open(t.TempDir(), Options{Writer: fmt.Sprintf("spiffe://example.org/ns/default/sa/w%d#1", w), Consumers: []string{"up"}})
		if err != nil {
			t.Fatal(err)
		}
		for i := range records {
			if err := src.Append(decision(i)); err != nil {
				t.Fatal(err)
			}
		}
		for _, l := range drainLines(t, src, "up") {
			lines[w] = append(lines[w], []byte(l))
		}
		src.Close()
	}
	dst, err := Open(t.TempDir(), Options{Writer: "spiffe://example.org/sigil/server#1", Consumers: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < len(lines[w]); i += batch {
				if n, err := dst.Ingest(lines[w][i:min(i+batch, len(lines[w]))]); err != nil || n != batch {
					t.Errorf("writer %d, batch at %d: %d ingested, %v", w, i, n, err)
				}
			}
		}()
	}
	wg.Wait()
	byWriter := map[string][]auditstream.Record{}
	for _, r := range drain(t, dst, "x") {
		byWriter[r.Sigil.Writer] = append(byWriter[r.Sigil.Writer], r)
	}
	if len(byWriter) != writers {
		t.Fatalf("records of %d writers read back, want %d", len(byWriter), writers)
	}
	for w, recs := range byWriter {
		if len(recs) != records {
			t.Fatalf("writer %s: %d records read back, want %d", w, len(recs), records)
		}
		checkChain(t, recs, 1)
	}
}
