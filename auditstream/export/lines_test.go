package export

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/auditstream/sink"
	"github.com/sigil-mesh/sigil/auditstream/spool"
)

// TestExportLinesAreTheSpooledRecords: a sink that takes lines (the file
// sink) gets the spooled records byte for byte, with no decode and
// encode between (what a server spent most of its CPU per exported
// decision on), and what it wrote verifies. A record whose JSON escapes
// characters (a path with "&" and "<") tells a re-encoding from the
// spooled line.
func TestExportLinesAreTheSpooledRecords(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), spool.Options{Writer: "w#1", Consumers: []string{"file", "peek"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	for _, path := range []string{"/a?x=1&y=<2>", "/b"} {
		in, _ := json.Marshal(map[string]any{"request": map[string]any{"path": path}})
		if err := sp.Append(&auditstream.Record{DecisionID: auditstream.NewID(), Path: auditstream.PathDecision, Input: in,
			Result: json.RawMessage("true"), Sigil: auditstream.Meta{Type: auditstream.TypeDecision}}); err != nil {
			t.Fatal(err)
		}
	}
	peek, err := sp.Read("peek", 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Join(peek.Lines, []byte("\n")), '\n')

	dir := t.TempDir()
	sk, err := sink.Open("file://" + filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	if _, ok := sk.(LineSink); !ok {
		t.Fatal("the file sink takes no lines: the runner decodes and the sink encodes every record again")
	}
	r := New(sp, "file", sk, slog.New(slog.DiscardHandler))
	b, err := sp.Read("file", 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.deliver(context.Background(), b.Lines); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("file holds\n%s\nwant the spooled lines\n%s", got, want)
	}
	var v auditstream.Verifier
	if err := auditstream.Read("audit.jsonl", bytes.NewReader(got), func(rec auditstream.Record, pos auditstream.Pos) error {
		v.Add(rec, pos)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, w := range v.Report() {
		if w.Broken != nil || w.Records != 2 {
			t.Fatalf("exported chain: %+v", w)
		}
	}
}

// lineCatcher is a LineSink that keeps what it is given.
type lineCatcher struct{ got [][]byte }

func (c *lineCatcher) ExportLines(_ context.Context, lines [][]byte) error {
	c.got = append(c.got, lines...)
	return nil
}
func (c *lineCatcher) Export(context.Context, []auditstream.Record) error { return nil }
func (c *lineCatcher) Close() error                                       { return nil }

// TestExportLinesPassesOverLinesThatAreNotJSON: a sink that takes lines
// gets no line that is not JSON (a damaged segment), which its receiver
// would refuse in every retry of the batch; the others go, as on the
// decoding path.
func TestExportLinesPassesOverLinesThatAreNotJSON(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		want  int
	}{
		{"all JSON", []string{`{"a":1}`, `{"b":2}`}, 2},
		{"one damaged", []string{`{"a":1}`, "{\x00\x00", `{"b":2}`}, 2},
		{"all damaged", []string{"{", "x"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &lineCatcher{}
			r := New(nil, "x", c, slog.New(slog.DiscardHandler))
			var lines [][]byte
			for _, l := range tc.lines {
				lines = append(lines, []byte(l))
			}
			if err := r.deliver(context.Background(), lines); err != nil {
				t.Fatal(err)
			}
			if len(c.got) != tc.want {
				t.Fatalf("sink got %q, want %d lines", c.got, tc.want)
			}
			for _, l := range c.got {
				if !json.Valid(l) {
					t.Fatalf("sink got %q", l)
				}
			}
		})
	}
}
