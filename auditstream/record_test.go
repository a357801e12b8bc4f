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
	} {
		a, b := r, r
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
		var back Record
		if err := json.Unmarshal(got, &back); err != nil || Check(back) != nil {
			t.Fatalf("%s does not check: %v %v", got, err, Check(back))
		}
	}
}
