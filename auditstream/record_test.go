package auditstream

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// SealJSON gives what Seal and json.Marshal give, for every shape of
// record, so a record sealed either way checks.
func TestSealJSONIsSealThenMarshal(t *testing.T) {
	for _, r := range []Record{
		{DecisionID: "a"},
		{DecisionID: "b", Timestamp: time.Unix(1, 5).UTC(), Path: PathDecision, Labels: map[string]string{"z": "1", "a": "2"},
			Input: json.RawMessage(`{ "request" : {"path":"/x"} }`), Result: json.RawMessage("true"), Erased: []string{"/input/x"},
			Bundles: map[string]Bundle{"sigil": {Revision: "r"}}, Sigil: Meta{Type: TypeDecision, Mode: ModeDryRun, Actor: "spiffe://x/y"}},
		{DecisionID: "c", Path: PathEvent("x509svid.issued"), Sigil: Meta{Type: "x509svid.issued", Subject: "s", Details: map[string]string{"serial": "1"}}},
		{DecisionID: "d", Sigil: Meta{Type: TypeGap, Lost: 7}},
		{DecisionID: "e", Input: json.RawMessage(`{"request":{"path":"/x","q":[1,-2.5e3,null]}}`), Result: json.RawMessage("false")},
		{DecisionID: "f", Input: json.RawMessage(`{"a":"<b>"}`)},
	} {
		a, b, d := r, r, r
		c1, c2 := NewChain("w#1", 3, "prev"), NewChain("w#1", 3, "prev")
		if err := c1.Seal(&a); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(&a)
		got, err := c2.SealJSON(&b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("SealJSON %s\nSeal+Marshal %s", got, want)
		}
		// AppendSealed into a used buffer: the same bytes after what was there.
		prefix := []byte("earlier line\n")
		appended, err := NewChain("w#1", 3, "prev").AppendSealed(append(make([]byte, 0, 4096), prefix...), &d)
		if err != nil || !bytes.Equal(appended, append(prefix, want...)) {
			t.Fatalf("AppendSealed %s (%v)\nwant %s%s", appended, err, prefix, want)
		}
		var back Record
		if err := json.Unmarshal(got, &back); err != nil || Check(back) != nil {
			t.Fatalf("%s does not check: %v %v", got, err, Check(back))
		}
	}
}

// appendRecord writes what json.Marshal writes, or says it cannot.
func TestAppendRecordIsMarshal(t *testing.T) {
	for _, r := range []Record{
		{},
		{DecisionID: "x<y", Labels: map[string]string{"a": "é"}},
		{DecisionID: "a", Timestamp: time.Unix(1700000000, 123456789).UTC(), Path: PathDecision, Labels: map[string]string{"b": "1", "a": "2"},
			Input: json.RawMessage(" {\"a\" : [1, 2, {\"b\":null}]}\n"), Result: json.RawMessage("false"), Error: "e", Erased: []string{"/input/a", "/input/b"},
			Bundles: map[string]Bundle{"z": {Revision: "1"}, "sigil": {Revision: "2"}},
			Sigil:   Meta{Type: TypeGap, Mode: ModeEnforce, Actor: "a", Subject: "s", Details: map[string]string{"k": "v", "j": ""}, Lost: -3, Writer: "w", Seq: 9, Prev: "p", Hash: "h"}},
		{DecisionID: "raw html", Input: json.RawMessage(`{"a":"<b>"}`)},
		{DecisionID: "bad raw", Input: json.RawMessage(`{`)},
		{DecisionID: "local time", Timestamp: time.Unix(5, 0).In(time.FixedZone("x", 3600))},
		{DecisionID: "compact raw", Input: json.RawMessage(`{"a":[1,"x",{"b":null}],"c":true}`)},
		{DecisionID: "year 10000", Timestamp: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		want, werr := json.Marshal(&r)
		got, ok := appendRecord(nil, &r)
		if ok && (werr != nil || !bytes.Equal(got, want)) {
			t.Errorf("appendRecord %s\njson.Marshal %s (%v)", got, want, werr)
		}
	}
}

func FuzzAppendRecord(f *testing.F) {
	f.Add("id", "sigil/authz/allow", `{"request":{"path":"/x"}}`, "k", "v", int64(3))
	f.Add("a\u2028", "<", `[1,"&"]`, "é", "\x00", int64(-1))
	f.Fuzz(func(t *testing.T, id, path, input, k, v string, n int64) {
		r := Record{DecisionID: id, Path: path, Input: json.RawMessage(input), Labels: map[string]string{k: v}, Erased: []string{v},
			Sigil: Meta{Type: k, Actor: v, Details: map[string]string{v: k}, Lost: n, Seq: n, Writer: id}}
		got, ok := appendRecord(nil, &r)
		if !ok {
			return
		}
		want, err := json.Marshal(&r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("appendRecord %s\njson.Marshal %s (%v)", got, want, err)
		}
	})
}
