package auditstream

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testdataLines are the decision records of testdata/decisions-session24.jsonl:
// three records of one sidecar's chain as the sidecars of session 24
// wrote them (BenchmarkAuditRecord's decision).
func testdataLines(t testing.TB) [][]byte {
	t.Helper()
	b, err := os.ReadFile("testdata/decisions-session24.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

// envelope is what ParseSealed keeps of a record decoded by encoding/json.
func envelope(r Record) Record {
	return Record{DecisionID: r.DecisionID, Timestamp: r.Timestamp, Path: r.Path, Error: r.Error, Sigil: r.Sigil}
}

// sameAsDecode fails t unless ParseSealed's verdict on line is encoding/json's:
// when it reads line, json.Unmarshal gives the same envelope, AppendChecked
// gives line back, and LineChecker agrees with AppendChecked on the hash.
func sameAsDecode(t *testing.T, line []byte) bool {
	t.Helper()
	got, ok := ParseSealed(line)
	if !ok {
		return false
	}
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("ParseSealed read %q, json.Unmarshal refuses it: %v", line, err)
	}
	if want := envelope(r); !reflect.DeepEqual(got, want) || !got.Timestamp.Equal(want.Timestamp) || got.Timestamp.Location().String() != want.Timestamp.Location().String() {
		t.Fatalf("ParseSealed(%q)\n= %+v\nencoding/json: %+v", line, got, want)
	}
	enc, encErr := AppendChecked(nil, &r)
	var c LineChecker
	checkErr := c.Check(line, &got)
	if (encErr == nil) != (checkErr == nil) {
		t.Fatalf("%q: AppendChecked says %v, LineChecker %v", line, encErr, checkErr)
	}
	if encErr == nil && !bytes.Equal(enc, line) {
		t.Fatalf("ParseSealed read %q, which encodes as\n%q", line, enc)
	}
	if encErr != nil && encErr.Error() != checkErr.Error() {
		t.Fatalf("%q: AppendChecked says %v, LineChecker %v", line, encErr, checkErr)
	}
	return true
}

// ParseSealed reads records in their sealed form, today's and every
// shape of record, and leaves every other spelling of a record to
// encoding/json (it reports false): a line it reads is passed on as it
// is, so it must be exactly what the record's encoding gives.
func TestParseSealedReadsOnlyTheSealedForm(t *testing.T) {
	lines := testdataLines(t)
	c := NewChain("spiffe://example.org/ns/a/sa/b#1", 6, strings.Repeat("ab", 32))
	for _, r := range []Record{
		{DecisionID: "a"},
		{DecisionID: "b", Timestamp: time.Unix(1, 5).UTC(), Path: PathDecision, Labels: map[string]string{"z": "1", "a": "2"},
			Input: json.RawMessage(`{"request":{"path":"/x"}}`), Result: json.RawMessage("true"), Erased: []string{"/input/x", "/input/y"},
			Bundles: map[string]Bundle{"sigil": {Revision: "r"}, "a": {}}, Sigil: Meta{Type: TypeDecision, Mode: ModeDryRun, Actor: "spiffe://x/y"}},
		{DecisionID: "c", Path: PathEvent("x509svid.issued"), Sigil: Meta{Type: "x509svid.issued", Subject: "s", Details: map[string]string{"serial": "1", "a": ""}}},
		{DecisionID: "d", Timestamp: time.Unix(5, 0).In(time.FixedZone("x", 3600)), Error: "eval", Input: json.RawMessage(`null`), Sigil: Meta{Type: TypeGap, Lost: -7}},
	} {
		line, err := c.SealJSON(&r)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
	}
	for _, line := range lines {
		if !sameAsDecode(t, line) {
			t.Fatalf("ParseSealed does not read the sealed record %s", line)
		}
	}
	good := string(lines[1])
	tampered := strings.Replace(good, `"GET"`, `"PUT"`, 1)
	if !sameAsDecode(t, []byte(tampered)) {
		t.Fatal("a tampered sealed line is not read")
	}
	var lc LineChecker
	if r, _ := ParseSealed([]byte(tampered)); lc.Check([]byte(tampered), &r) == nil {
		t.Fatal("a tampered line checks")
	}
	for _, tt := range []struct{ name, from, to string }{
		{"whitespace", `"path":`, `"path": `},
		{"whitespace in the input", `{"source":`, `{ "source":`},
		{"mis-cased key", `,"sigil":{"type"`, `,"Sigil":{"type"`},
		{"escaped key", `"writer":`, `"\u0077riter":`},
		{"escaped value", `#12345678"`, `\u002312345678"`},
		{"duplicate key", `"sigil":{"type"`, `"sigil":{"writer":"x","type"`},
		{"second sigil", `,"sigil":{"type":"decision"`, `,"sigil":{},"sigil":{"type":"decision"`},
		{"unknown key", `"result":true`, `"result":true,"extra":1`},
		{"keys reordered", `"labels":{"service":"api"},`, ``},
		{"empty labels", `"labels":{"service":"api"}`, `"labels":{}`},
		{"labels unsorted", `"labels":{"service":"api"}`, `"labels":{"z":"1","service":"api"}`},
		{"labels duplicated", `"labels":{"service":"api"}`, `"labels":{"service":"api","service":"web"}`},
		{"empty mode", `"mode":"enforce"`, `"mode":""`},
		{"lost zero", `"actor"`, `"lost":0,"actor"`},
		{"seq with a leading zero", `"seq":2`, `"seq":02`},
		{"seq as a float", `"seq":2`, `"seq":2.0`},
		{"timestamp not as written", `062795032Z`, `062795032000Z`},
		{"HTML in the input", `"/echo?size=1024"`, `"/echo?size=1024&a"`},
		{"non-ASCII", `"api"}`, `"apié"}`},
		{"trailing newline", `"}}`, "\"}}\n"},
		{"trailing garbage", `"}}`, `"}}x`},
	} {
		bad := strings.Replace(good, tt.from, tt.to, 1)
		if bad == good && tt.to != "" {
			t.Fatalf("%s: %q not in the line", tt.name, tt.from)
		}
		if tt.name == "keys reordered" {
			bad = strings.Replace(bad, `"result":true`, `"result":true,"labels":{"service":"api"}`, 1)
		}
		if sameAsDecode(t, []byte(bad)) {
			t.Errorf("%s: ParseSealed reads %s", tt.name, bad)
		}
	}
}

// FuzzParseSealed holds ParseSealed to encoding/json: whatever it reads
// decodes to the same envelope and encodes back to the same bytes.
func FuzzParseSealed(f *testing.F) {
	for _, line := range testdataLines(f) {
		f.Add(line)
	}
	f.Add([]byte(`{"decision_id":"d","timestamp":"1970-01-01T01:00:05+01:00","path":"","input":null,"error":"e","sigil":{"type":"gap","details":{"a":"","b":"c"},"lost":-7,"writer":"w","seq":1,"prev_hash":"","hash":""}}`))
	f.Fuzz(func(t *testing.T, line []byte) { sameAsDecode(t, line) })
}

// BenchmarkIngestRecord is the server's per-record work before the
// spool's lock on one of the bench's decisions: decoded by encoding/json
// and encoded again to check its hash (decode), or read by ParseSealed and
// hashed over its bytes (sealed).
func BenchmarkIngestRecord(b *testing.B) {
	line := testdataLines(b)[1]
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(line)))
		var enc []byte
		for b.Loop() {
			var r Record
			if err := json.Unmarshal(line, &r); err != nil {
				b.Fatal(err)
			}
			var err error
			if enc, err = AppendChecked(enc[:0], &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sealed", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(line)))
		var c LineChecker
		for b.Loop() {
			r, ok := ParseSealed(line)
			if !ok {
				b.Fatal("not read")
			}
			if err := c.Check(line, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Records written before ParseSealed (testdata: session 24's sidecars)
// verify, each is read in its sealed form, and its hash checks over its
// own bytes as over its decoding.
func TestSealedFormOfEarlierFilesVerifies(t *testing.T) {
	f, err := os.Open("testdata/decisions-session24.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var v Verifier
	if err := Read(f.Name(), f, func(r Record, pos Pos) error { v.Add(r, pos); return nil }); err != nil {
		t.Fatal(err)
	}
	rep := v.Report()
	if len(rep) != 1 || rep[0].Records != 3 || rep[0].Broken != nil || rep[0].Missing != 0 {
		t.Fatalf("report %+v", rep)
	}
	var c LineChecker
	for _, line := range testdataLines(t) {
		r, ok := ParseSealed(line)
		if !ok {
			t.Fatalf("not read in its sealed form: %s", line)
		}
		if err := c.Check(line, &r); err != nil {
			t.Fatal(err)
		}
	}
}
