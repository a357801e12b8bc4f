package replay

import (
	"bytes"
	"compress/gzip"
	"context"
	"strings"
	"testing"
)

// FuzzRead feeds the decision-log reader what a user or a network
// receiver may hand it: it never panics, every decision it yields has an
// id and a place, a file it refuses is named, and what it yields
// replays under a real policy without panicking.
func FuzzRead(f *testing.F) {
	f.Add([]byte(`{"decision_id":"a","path":"sigil/authz/allow","input":{"source":{"principal":"spiffe://example.org/ns/default/sa/web"},"request":{"method":"GET","path":"/v1/items?x=1"}},"result":true}` + "\n"))
	f.Add([]byte(`[{"decision_id":"a","path":"/sigil/authz/allow","input":{"request":{"query":{"a":["1"]},"headers":{"x":"y"}}},"error":{"code":"x"}}]`))
	f.Add([]byte(`{"decision_id":"c","path":"sigil/audit/agent.attested","sigil":{"type":"agent.attested"}}` + "\n{\n"))
	f.Add([]byte(`{"decision_id":"d","path":"sigil/authz/allow","input":null,"result":"yes"}`))
	f.Add([]byte("[1,"))
	f.Add([]byte("\n\n  \n"))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`[{"decision_id":"g","path":"sigil/authz/allow","input":{"destination":{"port":"x"}}}]`))
	zw.Close()
	f.Add(gz.Bytes())
	base := load(f, "testdata/base")
	proposed := load(f, "testdata/proposed")
	f.Fuzz(func(t *testing.T, data []byte) {
		d := NewDiff(base, proposed)
		n := 0
		skips, err := Read(bytes.NewReader(data), "fuzz.log", func(rec Recorded) error {
			if rec.ID == "" || !strings.HasPrefix(rec.Where, "fuzz.log:") {
				t.Fatalf("decision without id or place: %+v", rec)
			}
			n++
			d.Add(context.Background(), rec)
			return nil
		})
		if err != nil && !strings.Contains(err.Error(), "fuzz.log") {
			t.Fatalf("error does not name the file: %v", err)
		}
		for _, s := range skips {
			if s.Reason == "" || !strings.HasPrefix(s.Where, "fuzz.log") {
				t.Fatalf("skip without reason or place: %+v", s)
			}
		}
		if rep := d.Report(); rep.Replayed != n || rep.Unchanged+rep.Changed != n {
			t.Fatalf("totals %+v for %d decisions", rep, n)
		}
	})
}
