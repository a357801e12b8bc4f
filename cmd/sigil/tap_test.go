package main

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

// A tap line shows a remote-chosen path and authority escaped, never as
// terminal control characters.
func TestTapLineEscapesControlCharacters(t *testing.T) {
	line := tapLine(&adminv1.TapEvent{Time: time.Unix(0, 0).UTC(), Direction: "inbound", Method: "GET", Authority: "api\x1b]0;owned\x07",
		Path: "/a\x1b[2Jb", Status: 200, LatencyMS: 1.5, Source: "spiffe://example.org/ns/default/sa/web", Reporter: "spiffe://example.org/ns/default/sa/api"})
	if strings.ContainsAny(line, "\x1b\x07") || !strings.Contains(line, `/a\x1b[2Jb`) {
		t.Fatalf("line %q", line)
	}
}

// sigil top counts by direction, method and path, keeps best, worst and
// last latency, counts 5xx and no answer as failures, and lists the
// busiest first.
func TestTopTableCountsBusiestFirst(t *testing.T) {
	tt := newTopTable()
	for _, ev := range []adminv1.TapEvent{
		{Direction: "inbound", Method: "GET", Path: "/a", Status: 200, LatencyMS: 5},
		{Direction: "inbound", Method: "GET", Path: "/a", Status: 503, LatencyMS: 1},
		{Direction: "inbound", Method: "GET", Path: "/a", Status: 0, LatencyMS: 9},
		{Direction: "inbound", Method: "GET", Path: "/a", Status: 404, LatencyMS: 3},
		{Direction: "outbound", Method: "GET", Path: "/a", Status: 200, LatencyMS: 2},
		{Direction: "inbound", Method: "POST", Path: "/b", Status: 201, LatencyMS: 7},
		{Direction: "inbound", Method: "POST", Path: "/b", Status: 201, LatencyMS: 8},
	} {
		tt.add(&ev)
	}
	rows := tt.busiest(10)
	want := []topRow{
		{topKey: topKey{"inbound", "GET", "/a"}, count: 4, ok: 2, best: 1, worst: 9, last: 3},
		{topKey: topKey{"inbound", "POST", "/b"}, count: 2, ok: 2, best: 7, worst: 8, last: 8},
		{topKey: topKey{"outbound", "GET", "/a"}, count: 1, ok: 1, best: 2, worst: 2, last: 2},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, rows[i], want[i])
		}
	}
	var b bytes.Buffer
	if err := tt.render(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "50.00%") || !strings.HasPrefix(b.String(), "DIRECTION") {
		t.Fatalf("table:\n%s", b.String())
	}
}

// sigil top keeps at most topMaxKeys distinct (direction, method, path)
// rows however many distinct paths the service is asked for (ids in
// paths, a scan): the rest are counted in one "(other)" row per
// direction, so a long-running top's memory is bounded.
func TestTopTableBoundsDistinctPaths(t *testing.T) {
	tt := newTopTable()
	n := topMaxKeys + 500
	for i := range n {
		tt.add(&adminv1.TapEvent{Direction: "inbound", Method: "GET", Path: "/users/" + strconv.Itoa(i), Status: 200, LatencyMS: 1})
	}
	if got := len(tt.rows); got > topMaxKeys+2 {
		t.Fatalf("%d rows kept for %d distinct paths, want at most %d", got, n, topMaxKeys+2)
	}
	total := 0
	other := 0
	for _, r := range tt.busiest(len(tt.rows)) {
		total += r.count
		if r.path == topOtherPath {
			other = r.count
		}
	}
	if total != n || other != 500 {
		t.Fatalf("counted %d events (%d in %q), want %d (500)", total, other, topOtherPath, n)
	}
}
