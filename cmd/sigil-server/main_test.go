package main

import (
	"io"
	"strings"
	"testing"
)

// agent evict, ban and unban --spiffe-id read the ID by naming's agent ID rule before it
// calls the server: a workload ID, the server's or a malformed one is
// refused with the rule, not sent to be "not found".
func TestOneParserPerNameEvictSPIFFEID(t *testing.T) {
	dir := t.TempDir() // no server: a call would fail to dial
	for id, want := range map[string]string{
		"spiffe://example.org/ns/default/sa/web":           "not an agent ID",
		"spiffe://example.org/sigil/server":                "not an agent ID",
		"spiffe://example.org/sigil/agent/join_token":      "not an agent ID",
		"spiffe://example.org/sigil/agent/join_token/n1/x": "not an agent ID",
		"not-an-id": "naming: ",
		"spiffe://example.org/sigil/agent/join_token/node\x1b": "naming: ",
	} {
		for _, sub := range []string{"evict", "ban", "unban"} {
			root := newRoot()
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			root.SetArgs([]string{"agent", sub, "--data-dir", dir, "--spiffe-id", id})
			err := root.Execute()
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--spiffe-id") {
				t.Errorf("%s --spiffe-id %q: %v, want %q", sub, id, err, want)
			}
		}
	}
}
