package jsonenc

import (
	"bytes"
	"encoding/json"
	"testing"
)

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "<", "é", "\x00", `"`, "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := AppendString(nil, s)
		if !ok {
			return
		}
		want, _ := json.Marshal(s)
		if string(got) != string(want) {
			t.Fatalf("AppendString %s, Marshal %s", got, want)
		}
	})
}

// FuzzIsCompact holds IsCompact to encoding/json: it says yes exactly
// when json.Valid does and json.Compact leaves the document as it is.
func FuzzIsCompact(f *testing.F) {
	for _, s := range []string{`{"a":[1,-2.5e+3,true,false,null,"x\u00e9\n"]}`, `{}`, `[]`, `""`, `0`, `-0.1E5`, `{"a": 1}`, `01`, `1.`,
		`"\ud800"`, `"\x"`, "\"\x01\"", `[1,]`, `{"a":1,}`, `nul`, `{"a"}`, `[[[[]]]]`, `"é"`, " 1", "1 "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, m []byte) {
		var buf bytes.Buffer
		want := json.Valid(m) && json.Compact(&buf, m) == nil && bytes.Equal(buf.Bytes(), m)
		if got := IsCompact(m); got != want && (got || depth(m) <= maxCompactDepth) {
			t.Fatalf("IsCompact(%q) = %v, encoding/json says %v", m, got, want)
		}
	})
}

// depth is an upper bound of m's nesting.
func depth(m []byte) int { return bytes.Count(m, []byte("[")) + bytes.Count(m, []byte("{")) }
