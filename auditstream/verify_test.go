package auditstream

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// chain returns n sealed records of writer; gapAt (if > 0) makes record
// gapAt a gap record of 5 lost.
func chain(t testing.TB, writer string, n int, gapAt int) []Record {
	t.Helper()
	c := NewChain(writer, 0, "")
	out := make([]Record, n)
	for i := range out {
		out[i] = Record{DecisionID: fmt.Sprintf("%s-%d", writer, i+1), Timestamp: time.Date(2026, 11, 30, 4, 0, i, 0, time.UTC),
			Path: PathDecision, Result: json.RawMessage("true"), Sigil: Meta{Type: TypeDecision, Mode: ModeEnforce, Actor: "spiffe://td/ns/a/sa/b"}}
		if i+1 == gapAt {
			out[i].Path, out[i].Result, out[i].Sigil = PathEvent(TypeGap), nil, Meta{Type: TypeGap, Lost: 5}
		}
		if err := c.Seal(&out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// jsonLines encodes recs as the file sink writes them.
func jsonLines(t testing.TB, recs []Record) string {
	t.Helper()
	var b strings.Builder
	for _, r := range recs {
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// verifyFiles reads files (name → content) in name order and reports.
func verifyFiles(t *testing.T, files [][2]string) []WriterReport {
	t.Helper()
	var v Verifier
	for _, f := range files {
		if err := Read(f[0], strings.NewReader(f[1]), func(r Record, p Pos) error { v.Add(r, p); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	return v.Report()
}

func TestVerifyExportedTrailsFromManyWriters(t *testing.T) {
	a := chain(t, "spiffe://td/ns/a/sa/web#1", 6, 0)
	b := chain(t, "spiffe://td/ns/b/sa/api#1", 4, 3)
	edited := append([]Record(nil), a...)
	edited[2].Result = json.RawMessage("false") // the hash no longer holds
	forged := append([]Record(nil), a...)
	forged[3].DecisionID = "forged"
	NewChain(forged[3].Sigil.Writer, 3, forged[2].Sigil.Hash).Seal(&forged[3]) // resealed alone: seq 5 no longer links
	changedDup := a[4]
	changedDup.DecisionID = "other"
	NewChain(changedDup.Sigil.Writer, 4, a[3].Sigil.Hash).Seal(&changedDup)
	for _, tt := range []struct {
		name  string
		files [][2]string
		want  map[string]string // writer → want in the report line
	}{
		{"whole, two writers across three files", [][2]string{
			{"x.jsonl", jsonLines(t, a[:3])}, {"y.jsonl", jsonLines(t, append(append([]Record{}, b...), a[3:5]...))}, {"z.jsonl", jsonLines(t, a[5:])}},
			map[string]string{a[0].Sigil.Writer: "ok 6 records 1..6 gaps 0 lost 0 dup 0 missing 0", b[0].Sigil.Writer: "ok 4 records 1..4 gaps 1 lost 5 dup 0 missing 0"}},
		{"edited record", [][2]string{{"x.jsonl", jsonLines(t, edited)}},
			map[string]string{a[0].Sigil.Writer: "broken x.jsonl:3 (seq 3): hash does not match"}},
		{"removed record", [][2]string{{"x.jsonl", jsonLines(t, append(append([]Record{}, a[:2]...), a[3:]...))}},
			map[string]string{a[0].Sigil.Writer: "broken x.jsonl:3 (seq 3): seq 3 to 3 missing"}},
		{"reordered lines are ordered by seq", [][2]string{{"x.jsonl", jsonLines(t, []Record{a[1], a[0], a[3], a[2], a[4], a[5]})}},
			map[string]string{a[0].Sigil.Writer: "ok 6 records"}},
		{"resealed record breaks the next link", [][2]string{{"x.jsonl", jsonLines(t, forged)}},
			map[string]string{a[0].Sigil.Writer: "broken x.jsonl:5 (seq 5): prev_hash is not the hash of seq 4 (x.jsonl:4)"}},
		{"duplicates from at-least-once delivery", [][2]string{{"x.jsonl", jsonLines(t, a[:4])}, {"y.jsonl", jsonLines(t, a[2:])}},
			map[string]string{a[0].Sigil.Writer: "ok 6 records 1..6 gaps 0 lost 0 dup 2 missing 0"}},
		{"same seq, different record", [][2]string{{"x.jsonl", jsonLines(t, a)}, {"y.jsonl", jsonLines(t, []Record{changedDup})}},
			map[string]string{a[0].Sigil.Writer: "broken y.jsonl:1 (seq 5): a different record with the same seq as x.jsonl:5"}},
		{"starts after seq 1 (rotated away)", [][2]string{{"x.jsonl", jsonLines(t, a[2:])}},
			map[string]string{a[0].Sigil.Writer: "ok 4 records 3..6"}},
		{"one writer broken, the other whole", [][2]string{{"x.jsonl", jsonLines(t, append(append([]Record{}, b...), edited...))}},
			map[string]string{a[0].Sigil.Writer: "broken x.jsonl:7 (seq 3)", b[0].Sigil.Writer: "ok 4 records"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reps := verifyFiles(t, tt.files)
			if len(reps) != len(tt.want) {
				t.Fatalf("%d writers reported, want %d", len(reps), len(tt.want))
			}
			for _, r := range reps {
				got := fmt.Sprintf("ok %d records %d..%d gaps %d lost %d dup %d missing %d", r.Records, r.First, r.Last, len(r.Gaps), r.Lost, r.Duplicates, r.Missing)
				if r.Broken != nil {
					got = "broken " + r.Broken.String()
				}
				if !strings.HasPrefix(got, tt.want[r.Writer]) {
					t.Errorf("%s: %q, want %q", r.Writer, got, tt.want[r.Writer])
				}
			}
		})
	}
}

func TestReadUploadFormat(t *testing.T) {
	a := chain(t, "w", 3, 0)
	arr, _ := json.Marshal(a)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(arr)
	zw.Close()
	for _, tt := range []struct {
		name, body, want string
	}{
		{"gzip'd array", gz.String(), ""},
		{"plain array", string(arr), ""},
		{"unknown field is refused", `{"decision_id":"x","sigil":{"writer":"w","seq":1,"prev_hash":"","hash":"","type":"decision"},"extra":1}`, `x.json:1: not a record: json: unknown field "extra"`},
		{"two objects on a line", jsonLines(t, a[:1])[:len(jsonLines(t, a[:1]))-1] + "{}\n", "x.json:1: not a record: data after the record"},
		{"data after the array", string(arr) + "[]", "data after the array"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var v Verifier
			err := Read("x.json", strings.NewReader(tt.body), func(r Record, p Pos) error { v.Add(r, p); return nil })
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %v, want %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			reps := v.Report()
			if len(reps) != 1 || reps[0].Records != 3 || reps[0].Broken != nil {
				t.Fatalf("report %+v, want one whole writer of 3 records", reps)
			}
		})
	}
}

// FuzzReadRecords: any input, plain or gzip'd, is read without panic,
// and whatever it yields is verified without panic.
func FuzzReadRecords(f *testing.F) {
	a := chain(f, "w", 3, 2)
	arr, _ := json.Marshal(a)
	f.Add([]byte(jsonLines(f, a)))
	f.Add(arr)
	f.Add([]byte("\x1f\x8b\x08\x00"))
	f.Add([]byte(`[{"sigil":{"seq":-1}}, {}]`))
	f.Add([]byte("\n\n{\"sigil\":{}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v Verifier
		_ = Read("fuzz", bytes.NewReader(data), func(r Record, p Pos) error { v.Add(r, p); return nil })
		for _, r := range v.Report() {
			if r.Records == 0 {
				t.Errorf("writer %q reported with no records", r.Writer)
			}
		}
	})
}
