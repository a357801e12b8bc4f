package export

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// BenchmarkLineIsJSON is the exporter's check of each spooled line
// before a line sink gets it, on one of the bench's decisions: json.Valid
// as before, and isJSON.
func BenchmarkLineIsJSON(b *testing.B) {
	raw, err := os.ReadFile("../testdata/decisions-session24.jsonl")
	if err != nil {
		b.Fatal(err)
	}
	line := bytes.SplitN(raw, []byte("\n"), 2)[0]
	for _, f := range []struct {
		name string
		fn   func([]byte) bool
	}{{"json.Valid", json.Valid}, {"isJSON", isJSON}} {
		b.Run(f.name, func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				if !f.fn(line) {
					b.Fatal("not JSON")
				}
			}
		})
	}
}
