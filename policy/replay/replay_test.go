package replay

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/policy"
)

const td = "spiffe://example.org/ns/default/sa/"

// request is one recorded request class and how many times it was made.
type request struct {
	sa, service, method, path, protocol string
	times                               int
}

// recorded is the traffic of the decision log the tests replay: several
// request classes, one of which (web POST /v1/orders, once with a query
// string) the proposed policy blocks.
var recorded = []request{
	{"web", "api", "GET", "/v1/items?page=2", "http", 3},
	{"web", "api", "POST", "/v1/orders", "http", 3},
	{"web", "api", "GET", "/v1/items?page=3", "http", 2},
	{"web", "api", "POST", "/v1/orders?retry=1", "http", 1},
	{"admin", "api", "DELETE", "/v1/orders/7", "http", 2},
	{"web", "api", "GET", "/healthz", "http", 4},
	{"web", "api", "DELETE", "/v1/orders/7", "http", 1},
	{"batch", "db", "", "", "tcp", 2},
}

// writeLog has the real engine, under the base policy, decide the
// recorded traffic with its decision log on, and returns the log's path,
// the number of decisions and the decision id of the first POST
// /v1/orders.
func writeLog(t testing.TB) (path string, n int, firstPost string) {
	t.Helper()
	ctx := context.Background()
	path = filepath.Join(t.TempDir(), "decisions.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.New(ctx, "testdata/base", slog.New(slog.DiscardHandler), policy.WithDecisionLog(f, map[string]string{"service": "api"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recorded {
		for range r.times {
			in := &policy.Input{
				Source:      policy.PeerFromID(td + r.sa),
				Destination: policy.Dest{Principal: td + r.service, Service: r.service, Port: 8080},
				Request:     policy.Request{Method: r.method, Path: r.path, Host: r.service, Protocol: r.protocol},
				Connection:  policy.Connection{TLSVersion: "TLSv1.3"},
			}
			d := e.Decide(ctx, in)
			if d.Err != nil {
				t.Fatal(d.Err)
			}
			if firstPost == "" && r.method == "POST" {
				firstPost = d.ID
			}
			n++
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return path, n, firstPost
}

func load(t testing.TB, dir string) Policy {
	t.Helper()
	p, err := Load(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func diffFiles(t *testing.T, base, proposed string, files ...string) Report {
	t.Helper()
	d := NewDiff(load(t, base), load(t, proposed))
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		err = d.ReadFrom(context.Background(), f, name)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return d.Report()
}

// A proposed policy that blocks one request class: the replay finds that
// class, and only it, with every decision of it counted (the query string
// is not part of the class) and its first decision as the example.
func TestPolicyDiffFindsTheBlockedRequestClass(t *testing.T) {
	log, n, firstPost := writeLog(t)
	rep := diffFiles(t, "testdata/base", "testdata/proposed", log)
	if rep.Replayed != n || rep.Changed != 4 || rep.Tightened != 4 || rep.Loosened != 0 || rep.Unchanged != n-4 || rep.NotAsRecorded != 0 || rep.SkippedTotal() != 0 {
		t.Fatalf("totals: %+v", rep)
	}
	if len(rep.Changes) != 1 {
		t.Fatalf("changes: %+v", rep.Changes)
	}
	want := Change{Class: Class{Source: td + "web", DestinationPrincipal: td + "api", DestinationService: "api", Protocol: "http", Method: "POST", Path: "/v1/orders"},
		Direction: AllowToDeny, Count: 4, Example: firstPost, ExampleAt: log + ":4"}
	if rep.Changes[0] != want {
		t.Fatalf("change:\n got %+v\nwant %+v", rep.Changes[0], want)
	}
	if rep.Base.Revision == "" || rep.Base.Revision == rep.Proposed.Revision {
		t.Fatalf("revisions %q %q", rep.Base.Revision, rep.Proposed.Revision)
	}
}

// A loosening is found as deny → allow; the same policy on both sides
// changes nothing.
func TestPolicyDiffDirections(t *testing.T) {
	log, n, _ := writeLog(t)
	rep := diffFiles(t, "testdata/base", "testdata/loosened", log)
	if rep.Tightened != 0 || rep.Loosened != 4 || len(rep.Changes) != 1 || rep.Changes[0].Direction != DenyToAllow || rep.Changes[0].Path != "/healthz" {
		t.Fatalf("loosened: %+v", rep)
	}
	rep = diffFiles(t, "testdata/base", "testdata/base", log)
	if rep.Changed != 0 || rep.Unchanged != n || len(rep.Changes) != 0 {
		t.Fatalf("same policy: %+v", rep)
	}
	// Replayed against logs made under another policy: said, not hidden.
	rep = diffFiles(t, "testdata/proposed", "testdata/base", log)
	if rep.NotAsRecorded != 4 || rep.Loosened != 4 {
		t.Fatalf("not as recorded: %+v", rep)
	}
}

// The markdown is a table headed with both revisions, allow → deny rows
// first, and recorded values cannot break it.
func TestPolicyDiffMarkdown(t *testing.T) {
	log, _, firstPost := writeLog(t)
	rep := diffFiles(t, "testdata/base", "testdata/proposed", log)
	rep.Changes = append(rep.Changes, Change{Class: Class{Source: td + "x", Method: "GET", Path: "/a|b`<script>"}, Direction: DenyToAllow, Count: 1, Example: "id"})
	var b bytes.Buffer
	if err := rep.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"### Policy diff: `" + rep.Base.Revision[:12] + "` → `" + rep.Proposed.Revision[:12] + "`",
		"| Change | Decisions | Source | Destination | Method | Path | Example decision |",
		"| allow → deny | 4 | `" + td + "web` | `api (" + td + "api)` | `POST` | `/v1/orders` | `" + firstPost + "` |",
		"``/a\\|b`<script>``",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Index(md, "allow → deny |") > strings.Index(md, "deny → allow |") {
		t.Errorf("allow → deny is not first:\n%s", md)
	}
	for _, row := range strings.Split(md, "\n") {
		if strings.HasPrefix(row, "| ") && strings.Count(strings.ReplaceAll(row, `\|`, ""), "|") != 8 {
			t.Errorf("row with a cell too many or few: %s", row)
		}
	}
	var j bytes.Buffer
	if err := rep.JSON(&j); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(j.Bytes(), &back); err != nil || back.Tightened != 4 || back.Changes[0].Example != firstPost {
		t.Fatalf("json %v: %s", err, j.String())
	}
}

// The audit export's records (decisions with "sigil" meta beside the
// CA's events, dry-run twins, a gap) and OPA's gzip'd upload body replay
// like the sidecar's log; what is not a decision is skipped with its
// reason and place.
func TestPolicyDiffReadsEveryDecisionLogFormat(t *testing.T) {
	log, n, firstPost := writeLog(t)
	raw, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	dir := t.TempDir()

	// The audit export: each decision as an auditstream record, its
	// dry-run twin, a CA event, a gap and a broken line.
	var export bytes.Buffer
	export.WriteString(`{"decision_id":"ca-1","timestamp":"2026-11-30T00:00:00Z","path":"sigil/audit/x509svid.issued","sigil":{"type":"x509svid.issued","writer":"server","seq":1,"prev_hash":"","hash":"h"}}` + "\n")
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		m["sigil"] = map[string]any{"type": "decision", "mode": "enforce", "writer": "w", "seq": i + 1}
		m["erased"] = []string{"/input/request/headers/authorization"}
		b, _ := json.Marshal(m)
		export.Write(append(b, '\n'))
		m["sigil"] = map[string]any{"type": "decision", "mode": "dryrun", "writer": "w", "seq": i + 1}
		m["decision_id"] = "dry-" + m["decision_id"].(string)
		b, _ = json.Marshal(m)
		export.Write(append(b, '\n'))
	}
	export.WriteString(`{"decision_id":"gap-1","path":"sigil/audit/gap","sigil":{"type":"gap","lost":3}}` + "\n")
	export.WriteString("{not json\n\n")
	exportPath := filepath.Join(dir, "export.jsonl")
	if err := os.WriteFile(exportPath, export.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	// OPA's upload body: a gzip'd JSON array.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("[" + strings.Join(lines, ",\n") + "]"))
	zw.Close()
	gzPath := filepath.Join(dir, "upload.json.gz")
	if err := os.WriteFile(gzPath, gz.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		file      string
		exampleAt string
		skipped   map[string]int
		where     string
		masked    int
	}{
		{exportPath, exportPath + ":8", map[string]int{
			`not a decision (audit record of type "x509svid.issued")`:                  1,
			`not a decision (audit record of type "gap")`:                              1,
			"dry-run decision (the enforced decision of the same request is replayed)": n,
			"unparsable": 1,
		}, exportPath + fmt.Sprintf(":%d: ", 2*n+3), n},
		{gzPath, gzPath + ":[3]", map[string]int{}, "", 0},
	} {
		rep := diffFiles(t, "testdata/base", "testdata/proposed", tc.file)
		if rep.Replayed != n || rep.Tightened != 4 || len(rep.Changes) != 1 || rep.Changes[0].Example != firstPost || rep.Changes[0].ExampleAt != tc.exampleAt || rep.Masked != tc.masked {
			t.Errorf("%s: %+v", tc.file, rep)
		}
		got := map[string]int{}
		for _, s := range rep.Skipped {
			got[s.Reason] = s.Count
			if s.Reason == "unparsable" && !strings.HasPrefix(s.Where[0], tc.where) {
				t.Errorf("%s: unparsable line at %q, want %q...", tc.file, s.Where[0], tc.where)
			}
		}
		if len(got) != len(tc.skipped) {
			t.Errorf("%s: skipped %v, want %v", tc.file, got, tc.skipped)
		}
		for k, v := range tc.skipped {
			if got[k] != v {
				t.Errorf("%s: skipped %q %d, want %d", tc.file, k, got[k], v)
			}
		}
	}
}

// Bad input is an error naming the file and what is wrong, never a
// panic.
func TestPolicyDiffBadInput(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ dir, want string }{
		{"testdata/missing", "testdata/missing"},
		{"testdata/broken", "testdata/broken does not compile"},
		{"testdata/base/authz_test.rego", "no module declares package sigil.authz"},
	} {
		_, err := Load(ctx, tc.dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%s): %v, want %q", tc.dir, err, tc.want)
		}
	}
	d := NewDiff(load(t, "testdata/base"), load(t, "testdata/proposed"))
	for _, tc := range []struct{ name, content, want string }{
		{"routes.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\n", "routes.yaml: not a decision log: routes.yaml:1: "},
		{"other.json", `{"a": 1}` + "\n" + `{"b": 2}`, "other.json: not a decision log: other.json:1 (not a decision-log record (no decision_id or path))"},
		{"array.json", `[1, 2]`, "array.json: not a decision log: array.json:[0]"},
		{"bad.gz", "\x1f\x8bnot gzip", "bad.gz: gzip"},
	} {
		err := d.ReadFrom(ctx, strings.NewReader(tc.content), tc.name)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

var update = flag.Bool("update", false, "rewrite testdata/decisions.log from the real engine")

// testdata/decisions.log, which the CLI's tests replay, is a log the real
// engine wrote (go test -run TestCheckedInDecisionLog -update) and gives
// what a fresh one gives.
func TestCheckedInDecisionLog(t *testing.T) {
	const golden = "testdata/decisions.log"
	if *update {
		log, _, _ := writeLog(t)
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, n, _ := writeLog(t)
	rep := diffFiles(t, "testdata/base", "testdata/proposed", golden)
	if rep.Replayed != n || rep.Tightened != 4 || len(rep.Changes) != 1 || rep.Changes[0].ExampleAt != golden+":4" || rep.NotAsRecorded != 0 {
		t.Fatalf("%s: %+v", golden, rep)
	}
}
