package server

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/auditstream/spool"
	"github.com/sigil-mesh/sigil/server/registry"
)

// BenchmarkAcceptAudit is the server's work per sidecar decision it
// exports (ExportAudit after the agent's call is decoded): batches of 100
// of the bench's decisions (auditstream/testdata, resealed in one chain of
// a workload of the agent) checked and spooled. ns/op is per batch;
// ns/record is per decision (bench/README.md, session 25).
func BenchmarkAcceptAudit(b *testing.B) {
	const batch = 100
	raw, err := os.ReadFile("../auditstream/testdata/decisions-session24.jsonl")
	if err != nil {
		b.Fatal(err)
	}
	var proto auditstream.Record
	if err := json.Unmarshal(bytes.SplitN(raw, []byte("\n"), 2)[0], &proto); err != nil {
		b.Fatal(err)
	}
	c := auditstream.NewChain(statsReviews+"#a1", 0, "")
	lines := make([][]byte, b.N*batch)
	for i := range lines {
		r := proto
		if lines[i], err = c.SealJSON(&r); err != nil {
			b.Fatal(err)
		}
	}
	sp, err := spool.Open(b.TempDir(), spool.Options{MaxBytes: 1 << 40, Writer: "spiffe://example.org/sigil/server#1", Consumers: []string{"x"}})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	s := &Server{auditOut: &auditStream{sp: sp}}
	entries := []registry.Entry{{SPIFFEID: statsReviews, ParentID: agent1}}
	b.SetBytes(int64(batch * len(lines[0])))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := s.acceptAudit(agent1, entries, lines[i*batch:(i+1)*batch])
		if err != nil || resp.Accepted != batch {
			b.Fatalf("%v %v", resp, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/record")
}
