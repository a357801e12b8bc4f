package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A policy held in memory (a Policy resource) is loaded with its
// revision, a broken one leaves the last good in force, and a dry-run
// engine writing to the enforced one's decision log marks its lines with
// labels.mode.
func TestPolicyResourceSourceAndDryRunLog(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	var buf bytes.Buffer
	enf, err := New(ctx, "", log, WithDecisionLog(&buf, map[string]string{"service": "api"}))
	if err != nil {
		t.Fatal(err)
	}
	dry, _ := New(ctx, "", log, WithMode(ModeDryRun), WithDecisionLogOf(enf))
	in := func() *Input { return &Input{Request: Request{Method: "GET", Protocol: ProtocolHTTP}} }
	if d := enf.Decide(ctx, in()); d.Allow || d.Err == nil {
		t.Fatalf("no policy: %+v, want a denial", d)
	}
	if err := enf.Load(ctx, Source{Modules: map[string]string{"a.rego": "package sigil.authz\n\nallow := true\n"}, Revision: "default/a@1"}); err != nil {
		t.Fatal(err)
	}
	if err := enf.Load(ctx, Source{Modules: map[string]string{"a.rego": "package sigil.authz\n\nallow if {\n"}, Revision: "default/a@2"}); err == nil {
		t.Fatal("a policy that does not parse was loaded")
	}
	if err := dry.Load(ctx, Source{Modules: map[string]string{"a.rego": "package sigil.authz\n\ndefault allow := false\n"}, Revision: "default/w@3"}); err != nil {
		t.Fatal(err)
	}
	if d := enf.Decide(ctx, in()); !d.Allow || d.Revision != "default/a@1" {
		t.Fatalf("enforced %+v: want allow by the last good policy", d)
	}
	if d := dry.Decide(ctx, in()); d.Allow || d.Mode != ModeDryRun || d.Revision != "default/w@3" {
		t.Fatalf("dry run %+v", d)
	}
	if err := dry.Flush(); err != nil || buf.Len() != 0 {
		t.Fatalf("the dry-run engine flushed a log it does not own: %v, %d bytes", err, buf.Len())
	}
	if err := enf.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	for i, want := range []struct{ mode, rev string }{{"enforce", ""}, {"enforce", "default/a@1"}, {"dryrun", "default/w@3"}} {
		var rec struct {
			Labels  map[string]string            `json:"labels"`
			Bundles map[string]map[string]string `json:"bundles"`
		}
		if err := json.Unmarshal([]byte(lines[i]), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Labels["mode"] != want.mode || rec.Labels["service"] != "api" || rec.Bundles["sigil"]["revision"] != want.rev {
			t.Errorf("line %d: %s, want mode %s, revision %q", i, lines[i], want.mode, want.rev)
		}
	}
	enf.Clear()
	if enf.Loaded() {
		t.Fatal("Clear left a policy in force")
	}
}

// A load is counted when a policy changes, not when an unchanged one is
// read again (the path every second, a resource at every config change).
func TestPolicyResourceUnchangedIsNotALoad(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.rego"), []byte("package sigil.authz\n\nallow := true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	loads := 0
	count := WithReloadHook(func(bool) { loads++ })
	e, err := New(ctx, dir, slog.New(slog.DiscardHandler), count)
	if err != nil {
		t.Fatal(err)
	}
	e.Reload(ctx)
	e.Reload(ctx)
	r, _ := New(ctx, "", slog.New(slog.DiscardHandler), count)
	src := Source{Modules: map[string]string{"a.rego": "package sigil.authz\n\nallow := true\n"}, Revision: "default/a@1"}
	r.Load(ctx, src)
	r.Load(ctx, src)
	if loads != 2 {
		t.Fatalf("%d loads counted, want 2 (one per engine)", loads)
	}
}
