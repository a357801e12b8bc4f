package jsonenc

import (
	"bytes"
	"encoding/json"
	"maps"
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
		`"\ud800"`, `"\x"`, "\"\x01\"", `[1,]`, `{"a":1,}`, `nul`, `{"a"}`, `[[[[]]]]`, `"é"`, " 1", "1 ",
		`"a<b"`, `{"x":"&"}`, "\"\u2028\"", "\"\xe2\x80\xa8\"", "\"\xe2\x80\xa9x\"", "\"\xe2\x80\"", `"\u003c"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, m []byte) {
		var buf bytes.Buffer
		want := json.Valid(m) && json.Compact(&buf, m) == nil && bytes.Equal(buf.Bytes(), m)
		if got := IsCompact(m); got != want && (got || depth(m) <= maxCompactDepth) {
			t.Fatalf("IsCompact(%q) = %v, encoding/json says %v", m, got, want)
		}
		out, err := json.Marshal(json.RawMessage(m))
		asIs := err == nil && bytes.Equal(out, m)
		if got := MarshalsAsIs(m); got != asIs && (got || depth(m) <= maxCompactDepth) {
			t.Fatalf("MarshalsAsIs(%q) = %v, json.Marshal gives %q", m, got, out)
		}
	})
}

// depth is an upper bound of m's nesting.
func depth(m []byte) int { return bytes.Count(m, []byte("[")) + bytes.Count(m, []byte("{")) }

// BenchmarkAppendString appends the strings of a recorded decision's
// input (bench/README.md, Cost of audit export).
func BenchmarkAppendString(b *testing.B) {
	strs := []string{"spiffe://example.org/ns/bench/sa/bench", "bench", "api", "GET", "/echo?size=1024", "/echo", "size", "1024",
		"user-agent", "fortio.org/fortio-1.68.2", "http", "TLSv1.3", "9b2f6d1e-5c1a-4f7e-8e0b-3d4c5a6b7c8d"}
	buf := make([]byte, 0, 1024)
	for b.Loop() {
		buf = buf[:0]
		for _, s := range strs {
			buf, _ = AppendString(buf, s)
		}
	}
}

// TestAppendStringMapIsMarshal: AppendStringMap writes what json.Marshal
// writes for a map[string]string it can encode, and leaves b as it was
// (reporting false) for one it cannot.
func TestAppendStringMapIsMarshal(t *testing.T) {
	for _, m := range []map[string]string{
		{},
		{"a": "1"},
		{"x-b": "2", "a": "1", "user-agent": "curl/8", "host": "api"},
		{"k": "<html>"},
		{"<k>": "v"},
		{"k": "line\nbreak"},
	} {
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := AppendStringMap([]byte("prefix"), m)
		if !ok {
			if string(got) != "prefix" {
				t.Errorf("%v: refused but left %q", m, got)
			}
			continue
		}
		if string(got) != "prefix"+string(want) {
			t.Errorf("%v: %s, want %s", m, got[len("prefix"):], want)
		}
		// Without some keys: as Marshal writes the map they are deleted from.
		except := []string{"a", "host", "absent"}
		cut := maps.Clone(m)
		for _, k := range except {
			delete(cut, k)
		}
		want, _ = json.Marshal(cut)
		if got, ok := AppendStringMapExcept(nil, m, except); !ok || string(got) != string(want) {
			t.Errorf("%v without %v: %s (%v), want %s", m, except, got, ok, want)
		}
	}
}
