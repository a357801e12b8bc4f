package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sigil-mesh/sigil/internal/race"
)

const webToAPI = `package sigil.authz

default allow := false

allow if {
	input.source.service_account == "web"
	input.destination.service == "api"
	input.request.method == "GET"
}
`

func write(t *testing.T, dir, name, src string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

func input(method string) *Input {
	return &Input{
		Source:      PeerFromID("spiffe://example.org/ns/default/sa/web"),
		Destination: Dest{Principal: "spiffe://example.org/ns/default/sa/api", Service: "api", Port: 8080},
		Request:     Request{Method: method, Path: "/", Host: "api", Headers: map[string]string{"x": "y"}, Protocol: ProtocolHTTP},
		Connection:  Connection{TLSVersion: "TLSv1.3"},
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestDecide(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	write(t, dir, "authz.rego", webToAPI)
	write(t, dir, "authz_test.rego", "this is not even rego") // tests are not loaded
	var buf bytes.Buffer
	e, err := New(ctx, dir, quiet(), WithDecisionLog(&buf, map[string]string{"service": "api"}))
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(ctx, input("GET")); !d.Allow || d.Err != nil {
		t.Fatalf("GET: %+v", d)
	}
	if d := e.Decide(ctx, input("POST")); d.Allow {
		t.Fatalf("POST allowed: %+v", d)
	}
	other := input("GET")
	other.Source = PeerFromID("spiffe://example.org/ns/default/sa/db")
	if d := e.Decide(ctx, other); d.Allow {
		t.Fatal("db allowed")
	}
	if err := e.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d decision log lines", len(lines))
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"decision_id", "path", "input", "result", "timestamp", "bundles", "labels"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("decision log lacks %q: %s", k, lines[0])
		}
	}
	if rec["path"] != Path || rec["result"] != true {
		t.Fatalf("record %v", rec)
	}
}

func TestFailClosed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// No policy at all: load error, every decision denies.
	e, err := New(ctx, dir, quiet())
	if err == nil || e.Loaded() {
		t.Fatal("empty dir loaded")
	}
	if d := e.Decide(ctx, input("GET")); d.Allow || !errors.Is(d.Err, ErrNoPolicy) {
		t.Fatalf("no policy: %+v", d)
	}
	// A policy whose evaluation fails (conflicting values) denies.
	write(t, dir, "a.rego", `package sigil.authz
allow := true if input.request.method == "GET"
allow := false if input.request.path == "/"
`)
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(ctx, input("GET")); d.Allow || d.Err == nil {
		t.Fatalf("eval error: %+v", d)
	}
	// Allow that is not exactly true denies (a constant one is refused at
	// load: see TestPolicyCheckRefusesUselessPolicies).
	write(t, dir, "a.rego", "package sigil.authz\nallow := input.request.method\n")
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(ctx, input("GET")); d.Allow {
		t.Fatal("non-boolean allow allowed")
	}
}

func TestReloadRefusesBrokenPolicy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	write(t, dir, "authz.rego", webToAPI)
	var oks, refused int
	e, err := New(ctx, dir, quiet(), WithReloadHook(func(ok bool) {
		if ok {
			oks++
		} else {
			refused++
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	rev := e.Revision()
	for name, src := range map[string]string{
		"syntax":        "package sigil.authz\nallow if {",
		"wrong package": "package sigil.other\nallow := true\n",
		"unsafe var":    "package sigil.authz\nallow if { x }\n",
	} {
		write(t, dir, "authz.rego", src)
		if err := e.Reload(ctx); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if e.Revision() != rev {
			t.Errorf("%s: the old policy was replaced", name)
		}
		if d := e.Decide(ctx, input("GET")); !d.Allow {
			t.Errorf("%s: old policy no longer in force", name)
		}
	}
	if refused != 3 {
		t.Fatalf("refusals counted %d", refused)
	}
	write(t, dir, "authz.rego", strings.Replace(webToAPI, `"GET"`, `"POST"`, 1))
	watchCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.Watch(watchCtx, 10*time.Millisecond) }()
	deadline := time.After(5 * time.Second)
	for e.Revision() == rev {
		select {
		case <-deadline:
			t.Fatal("watch did not load the new policy")
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	<-done
	if d := e.Decide(ctx, input("POST")); !d.Allow {
		t.Fatal("new policy not in force")
	}
}

func TestPeerFromID(t *testing.T) {
	p := PeerFromID("spiffe://example.org/ns/prod/sa/web")
	if p.Namespace != "prod" || p.ServiceAccount != "web" {
		t.Fatalf("%+v", p)
	}
	if p := PeerFromID("spiffe://example.org/other/path"); p.Namespace != "" || p.Principal == "" {
		t.Fatalf("%+v", p)
	}
}

func FuzzPeerFromID(f *testing.F) {
	f.Add("spiffe://example.org/ns/a/sa/b")
	f.Add("spiffe://x/ns//sa/")
	f.Fuzz(func(t *testing.T, id string) {
		p := PeerFromID(id)
		if p.Principal != id {
			t.Fatal("principal changed")
		}
		in := &Input{Source: p, Request: Request{Headers: map[string]string{id: id}}}
		_ = in.value() // building the input never panics
	})
}

// Headers given lazily are built only for a policy that reads them (or
// for the decision log), and then decided on.
func TestHeadersFrom(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, rego string
		wantBuilt  bool
	}{
		{"reads headers", "package sigil.authz\ndefault allow := false\nallow if input.request.headers[\"x-user\"] == \"ann\"\n", true},
		{"reads none", "package sigil.authz\ndefault allow := false\nallow if input.request.method == \"GET\"\n", false},
	} {
		dir := t.TempDir()
		write(t, dir, "authz.rego", tc.rego)
		e, err := New(ctx, dir, quiet())
		if err != nil {
			t.Fatal(err)
		}
		built := false
		in := input("GET")
		in.Request.Headers = nil
		in.Request.HeadersFrom = func() map[string]string { built = true; return map[string]string{"x-user": "ann"} }
		if d := e.Decide(ctx, in); !d.Allow || built != tc.wantBuilt {
			t.Errorf("%s: allow=%v built=%v; want allow and built=%v", tc.name, d.Allow, built, tc.wantBuilt)
		}
	}
}

// An engine is built whole: the hooks given to New see the load New
// makes (the first policy load once went uncounted because the reload
// hook was set after New), and the decision log's writer is the engine's
// to flush and close.
func TestPolicyHooksAtConstruction(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		src         string // "" writes no policy at all
		ok, refused int
	}{
		{"good policy", webToAPI, 1, 0},
		{"broken policy", "package sigil.authz\nallow if {", 0, 1},
		{"no policy", "", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.src != "" {
				write(t, dir, "authz.rego", tc.src)
			}
			var ok, refused int
			w := &closeRecorder{}
			e, _ := New(ctx, dir, quiet(), WithReloadHook(func(good bool) {
				if good {
					ok++
				} else {
					refused++
				}
			}), WithDecisionLog(w, nil))
			if ok != tc.ok || refused != tc.refused {
				t.Fatalf("after New: %d ok, %d refused; want %d, %d", ok, refused, tc.ok, tc.refused)
			}
			e.Decide(ctx, input("GET"))
			if err := e.Flush(); err != nil || w.Len() == 0 || w.flushed != 1 {
				t.Fatalf("Flush: %v, %d bytes written, writer flushed %d times", err, w.Len(), w.flushed)
			}
			if err := e.Close(); err != nil || !w.closed {
				t.Fatalf("Close: %v, writer closed: %v", err, w.closed)
			}
		})
	}
}

// closeRecorder is a buffer that records Flush and Close.
type closeRecorder struct {
	bytes.Buffer
	flushed int
	closed  bool
}

func (c *closeRecorder) Flush() error { c.flushed++; return nil }
func (c *closeRecorder) Close() error { c.closed = true; return nil }

// A decision's ID is a random version-4 UUID, unique, in one allocation
// (the string; uuid.NewString's random bytes were a second).
func TestRequestPathAllocationsDecisionID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newID()
		u, err := uuid.Parse(id)
		if err != nil || u.Version() != 4 || u.Variant() != uuid.RFC4122 || u.String() != id {
			t.Fatalf("id %q: %v, version %d, variant %v", id, err, u.Version(), u.Variant())
		}
		if seen[id] {
			t.Fatalf("id %q given twice", id)
		}
		seen[id] = true
	}
	if race.Enabled {
		return
	}
	if n := testing.AllocsPerRun(100, func() { newID() }); n > 1 {
		t.Errorf("%.1f allocations per decision ID, want at most 1", n)
	}
}
