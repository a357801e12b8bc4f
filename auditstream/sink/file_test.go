package sink

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/auditstream"
)

// sealed returns n records of writer, chained from seq 1.
func sealed(t testing.TB, writer string, n int) []auditstream.Record {
	t.Helper()
	c := auditstream.NewChain(writer, 0, "")
	out := make([]auditstream.Record, n)
	for i := range out {
		out[i] = auditstream.Record{
			DecisionID: "id-" + writer + "-" + string(rune('a'+i%26)),
			Timestamp:  time.Date(2026, 11, 30, 4, 0, i, 0, time.UTC),
			Path:       auditstream.PathDecision,
			Result:     json.RawMessage(`true`),
			Sigil:      auditstream.Meta{Type: auditstream.TypeDecision, Mode: auditstream.ModeEnforce, Actor: "spiffe://example.org/ns/a/sa/b"},
		}
		if err := c.Seal(&out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestFileSpecParamsRefusedByName(t *testing.T) {
	dir := t.TempDir()
	checkSpecsRefused(t, []specCase{
		{"file://" + dir + "/a.jsonl?max-sise=1MiB", `unknown parameter "max-sise"`},
		{"file://" + dir + "/a.jsonl?max-size=10", `max-size="10"`},
		{"file://" + dir + "/a.jsonl?max-size=1MiB&max-size=2MiB", `"max-size" given 2 times`},
		{"file://" + dir + "/a.jsonl?max-age=soon", `max-age="soon"`},
		{"file://" + dir + "/a.jsonl?max-files=-1", `max-files="-1"`},
		{"file://host/a.jsonl", `host "host"`},
		{"file:a.jsonl", "absolute file path"},
		{"file://" + dir + "/missing/a.jsonl", "directory of"},
	})
	s, err := Open("file://" + dir + "/ok.jsonl?max-size=1MiB&max-age=1h&max-files=3")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// readLines returns the records of one file sink file.
func readLines(t *testing.T, path string) []auditstream.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditstream.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r auditstream.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: line %q: %v", path, sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

func TestFileRotationBySizeAgeAndCount(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	now := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	recs := sealed(t, "w", 40)
	line, _ := json.Marshal(recs[10]) // a full line: seq 1 has no prev_hash
	// Room for about four records a file.
	s, err := newFileSink(fileConfig{path: path, maxSize: int64(4*len(line) + 20), maxAge: time.Hour, maxFiles: 3}, clock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 20; i++ { // by size: 20 records, four a file
		if err := s.Export(ctx, recs[i:i+1]); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
	}
	old, err := s.rotated()
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 3 {
		t.Fatalf("rotated files %v: want 3 (max-files)", old)
	}
	if !sort.StringsAreSorted(old) {
		t.Errorf("rotated names do not sort: %v", old)
	}
	// The newest rotated file holds records 13..16, the active one 17..20.
	if got := readLines(t, old[2]); len(got) != 4 || got[0].Sigil.Seq != 13 {
		t.Errorf("newest rotated file: %d records from seq %d, want 4 from 13", len(got), got[0].Sigil.Seq)
	}
	if got := readLines(t, path); len(got) != 4 || got[3].Sigil.Seq != 20 {
		t.Errorf("active file: %d records, last seq %d; want 4, last 20", len(got), got[len(got)-1].Sigil.Seq)
	}
	// By age: one more record an hour later goes to a new file.
	now = now.Add(time.Hour)
	if err := s.Export(ctx, recs[20:21]); err != nil {
		t.Fatal(err)
	}
	if got := readLines(t, path); len(got) != 1 || got[0].Sigil.Seq != 21 {
		t.Errorf("after max-age: active file holds %d records, want only seq 21", len(got))
	}
	for _, p := range append(old, path) {
		st, err := os.Stat(p)
		if err != nil {
			continue // pruned since
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", p, st.Mode().Perm())
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A restart rotates away the file the last run left.
	s, err = newFileSink(fileConfig{path: path, maxSize: 1 << 20, maxFiles: 0}, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := readLines(t, path); len(got) != 0 {
		t.Errorf("after restart the active file holds %d records, want a fresh file", len(got))
	}
	if err := s.Export(ctx, recs[21:]); err != nil {
		t.Fatal(err)
	}
	if got := readLines(t, path); len(got) != 19 {
		t.Errorf("active file holds %d records, want 19", len(got))
	}
}

func TestFileRefusesReadableAndSymlink(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose.jsonl")
	if err := os.WriteFile(loose, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newFileSink(fileConfig{path: loose, maxSize: 1 << 20}, time.Now); err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Errorf("0644 file: error %v, want a refusal naming the mode", err)
	}
	link := filepath.Join(dir, "link.jsonl")
	if err := os.Symlink(filepath.Join(dir, "elsewhere"), link); err != nil {
		t.Fatal(err)
	}
	if _, err := newFileSink(fileConfig{path: link, maxSize: 1 << 20}, time.Now); err == nil {
		t.Error("symlink in the file's place: opened, want a refusal")
	}
}

// specCase is a spec Open must refuse, with what its error must say.
type specCase struct{ spec, want string }

// checkSpecsRefused opens each spec and checks the refusal names the
// fault.
func checkSpecsRefused(t *testing.T, cases []specCase) {
	t.Helper()
	for _, tt := range cases {
		s, err := Open(tt.spec)
		if err == nil {
			s.Close()
			t.Errorf("%s: opened, want error %q", tt.spec, tt.want)
		} else if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want it to name %q", tt.spec, err, tt.want)
		}
	}
}
