package main

import (
	"strings"
	"testing"
)

// TestScalingTableShape checks the curve's table: a header and separator
// of the same column count as every row, ratios against direct, and the
// points without results left out.
func TestScalingTableShape(t *testing.T) {
	rep := &report{}
	for _, pt := range scalePoints[:2] {
		rep.Results = append(rep.Results,
			Result{Scenario: "scaling", Setup: "direct", Conns: pt.conns, RespBytes: pt.size, QPS: 1000, P99ms: 1},
			Result{Scenario: "scaling", Setup: "sigil", Conns: pt.conns, RespBytes: pt.size, QPS: 250, RatioQPS: 0.25, P99ms: 4, ReadsClient: 3.9, WritesClient: 2, ReadsServer: 3.9, WritesServer: 2, Errors: 1},
			Result{Scenario: "scaling", Setup: "nginx", Conns: pt.conns, RespBytes: pt.size, QPS: 400, RatioQPS: 0.4, P99ms: 3, ReadsClient: 2, WritesClient: 2, ReadsServer: 2, WritesServer: 2})
	}
	var b strings.Builder
	scalingTable(&b, rep)
	var rows []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "|") {
			rows = append(rows, l)
		}
	}
	if len(rows) != 4 { // header, separator, two points
		t.Fatalf("got %d table lines, want 4:\n%s", len(rows), b.String())
	}
	want := strings.Count(rows[0], "|")
	for _, r := range rows[1:] {
		if n := strings.Count(r, "|"); n != want {
			t.Errorf("line %q has %d cells' bars, header %d", r, n, want)
		}
	}
	for _, s := range []string{"| 1 | 1 KiB | 1000 | 1.00 | 250 (0.25) | 4.00 | 400 (0.40) | 3.00 | 3.9/2.0; 3.9/2.0 | 2.0/2.0; 2.0/2.0 | 1 |", "| 16 | 1 KiB |"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, b.String())
		}
	}
}

func TestSizeName(t *testing.T) {
	for n, want := range map[int]string{100: "100 B", 1024: "1 KiB", 64 << 10: "64 KiB", 1 << 20: "1 MiB", 1500: "1500 B"} {
		if got := sizeName(n); got != want {
			t.Errorf("sizeName(%d) = %q, want %q", n, got, want)
		}
	}
}
