package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/auditstream/sink"
)

// TestAuditVerifyExportedFilesFromManyWriters: `sigil audit verify` takes
// the CA's trail and the file exporter's files from two writers together;
// it names the first broken link of the broken writer with file and line,
// passes the whole one and the trail, and exits non-zero.
func TestAuditVerifyExportedFilesFromManyWriters(t *testing.T) {
	dir := t.TempDir()
	trail := filepath.Join(dir, "audit.log")
	l, err := audit.Open(trail, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(audit.Event{Type: audit.ServerStarted}); err != nil {
		t.Fatal(err)
	}
	l.Close()

	// Two writers' records exported through the real file sink.
	s, err := sink.Open("file://" + filepath.Join(dir, "export.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []auditstream.Record
	for _, w := range []string{"spiffe://td/ns/a/sa/web#1", "spiffe://td/sigil/server#1"} {
		c := auditstream.NewChain(w, 0, "")
		for i := 0; i < 4; i++ {
			r := auditstream.Record{DecisionID: fmt.Sprintf("%s-%d", w, i), Timestamp: time.Now(), Path: auditstream.PathDecision,
				Result: json.RawMessage("true"), Sigil: auditstream.Meta{Type: auditstream.TypeDecision}}
			if err := c.Seal(&r); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r)
		}
	}
	if err := s.Export(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	s.Close()
	export := filepath.Join(dir, "export.jsonl")
	whole, _ := os.ReadFile(export)

	// The same export with the web writer's third record edited, split
	// over two files.
	lines := strings.SplitAfter(string(whole), "\n")
	lines[2] = strings.Replace(lines[2], `"result":true`, `"result":false`, 1)
	partA, partB := filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "b.jsonl")
	os.WriteFile(partA, []byte(strings.Join(lines[:5], "")), 0o600)
	os.WriteFile(partB, []byte(strings.Join(lines[5:], "")), 0o600)

	for _, tt := range []struct {
		name    string
		args    []string
		wantErr bool
		want    []string
	}{
		{"trail and a whole export", []string{trail, export}, false, []string{
			trail + ": ok, 1 events",
			"writer spiffe://td/ns/a/sa/web#1: ok, 4 records, seq 1..4",
			"writer spiffe://td/sigil/server#1: ok, 4 records, seq 1..4"}},
		{"an edited record across two files", []string{partA, partB}, true, []string{
			"writer spiffe://td/ns/a/sa/web#1: BROKEN",
			"writer spiffe://td/ns/a/sa/web#1: first broken link at " + partA + ":3 (seq 3): hash does not match",
			"writer spiffe://td/sigil/server#1: ok, 4 records"}},
		// Records as session 24's sidecars wrote them (before the agent and
		// server read sealed lines without decoding them) still verify.
		{"a file of session 24", []string{"../../auditstream/testdata/decisions-session24.jsonl"}, false, []string{
			"writer spiffe://example.org/ns/bench/sa/bench#12345678: ok, 3 records, seq 1..3"}},
		{"duplicates are not a break", []string{export, partB}, false, []string{
			"writer spiffe://td/sigil/server#1: ok, 4 records, seq 1..4, 0 gaps recorded (0 lost), 3 duplicates, 0 missing"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := verifyAuditFiles(&out, tt.args)
			if (err != nil) != tt.wantErr {
				t.Errorf("error %v, want error %v", err, tt.wantErr)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
