package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestMaskErasesConfiguredInputPaths(t *testing.T) {
	in := func() *Input {
		i := input("GET")
		i.Request.Headers = map[string]string{"authorization": "Bearer t0k3n", "cookie": "s=1", "x": "y", "a/b": "slash"}
		i.Request.Query = map[string][]string{"token": {"q"}, "page": {"1"}}
		return i
	}
	for _, tt := range []struct {
		name    string
		paths   []string
		erased  []string
		absent  []string // strings that must not be in the masked JSON
		present []string
	}{
		{name: "defaults", paths: DefaultMask, erased: []string{"/input/request/headers/authorization", "/input/request/headers/cookie"},
			absent: []string{"t0k3n", "s=1"}, present: []string{`"x":"y"`}},
		{name: "dotted form, any case", paths: []string{"input.request.headers.Authorization"}, erased: []string{"/input/request/headers/authorization"}, absent: []string{"t0k3n"}},
		{name: "outside headers", paths: []string{"/input/request/query/token", "/input/source/principal"},
			erased: []string{"/input/request/query/token", "/input/source/principal"}, absent: []string{`"q"`, "spiffe://example.org/ns/default/sa/web"}, present: []string{"t0k3n", `"page"`}},
		{name: "escaped slash", paths: []string{"/input/request/headers/a~1b"}, erased: []string{"/input/request/headers/a~1b"}, absent: []string{"slash"}},
		{name: "absent paths are not listed", paths: []string{"/input/request/headers/x-api-key", "/input/nothing/here"}, erased: nil, present: []string{"t0k3n"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMask(tt.paths)
			if err != nil {
				t.Fatal(err)
			}
			src := in()
			b, erased, err := m.Apply(src)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(erased, tt.erased) {
				t.Errorf("erased %v, want %v", erased, tt.erased)
			}
			for _, s := range tt.absent {
				if strings.Contains(string(b), s) {
					t.Errorf("%q still in %s", s, b)
				}
			}
			for _, s := range tt.present {
				if !strings.Contains(string(b), s) {
					t.Errorf("%q gone from %s", s, b)
				}
			}
			if src.Request.Headers["authorization"] != "Bearer t0k3n" {
				t.Error("Apply changed the input the policy decided on")
			}
			// AppendApply over a used buffer: the same JSON and erased
			// paths, nothing of the buffer's old content left.
			dst := append(make([]byte, 0, 4096), `{"stale":"t0k3n"}`...)
			b2, erased2, err := m.AppendApply(dst, in())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b2, b) || !reflect.DeepEqual(erased2, erased) {
				t.Errorf("AppendApply gave %s %v, Apply %s %v", b2, erased2, b, erased)
			}
			if len(m.other) == 0 && &b2[0] != &dst[0] {
				t.Error("AppendApply did not write into the buffer it was given")
			}
			// The input json.Marshal writes with the masked headers
			// deleted, byte for byte, also when a value makes the
			// encoder fall back to json.Marshal.
			for _, odd := range []bool{false, true} {
				src := in()
				if odd {
					src.Request.Headers["x"] = "<b>"
				}
				got, _, err := m.Apply(src)
				if err != nil {
					t.Fatal(err)
				}
				cp := *src
				cp.Request.Headers = maps.Clone(src.Request.Headers)
				for _, h := range m.headers {
					delete(cp.Request.Headers, h)
				}
				want, _ := json.Marshal(&cp)
				if len(m.other) == 0 && !bytes.Equal(got, want) {
					t.Errorf("Apply (escaped value %v) gave %s, want %s", odd, got, want)
				}
				if strings.Contains(string(got), "t0k3n") && slices.Contains(m.headers, "authorization") {
					t.Errorf("Apply (escaped value %v) kept a masked header: %s", odd, got)
				}
			}
		})
	}
}

func TestMaskRefusesBadPaths(t *testing.T) {
	for _, p := range []string{"/request/headers/authorization", "request.headers.x", "/input/", "/input//x", "/input/a~2b", "/input"} {
		if _, err := ParseMask([]string{p}); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

func FuzzParseMask(f *testing.F) {
	for _, s := range append([]string{"input.request.headers.authorization", "/input/a~1b/~0c", "/input/", "x"}, DefaultMask...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		m, err := ParseMask([]string{p})
		if err != nil {
			return
		}
		if _, _, err := m.Apply(input("GET")); err != nil {
			t.Fatal(err)
		}
	})
}

type failingRecorder struct{ calls int }

func (f *failingRecorder) Record(*Input, Decision) error { f.calls++; return errors.New("disk full") }

// An engine with a fail-closed recorder denies an enforced decision it
// could not record (ErrNotRecorded, so the sidecar answers 503); a
// dry-run one never blocks, and without fail-closed nothing changes.
func TestRecorderFailClosedDeniesUnrecordedDecisions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	write(t, dir, "authz.rego", webToAPI)
	for _, tt := range []struct {
		name       string
		failClosed bool
		mode       string
		allow      bool
	}{
		{name: "fail closed", failClosed: true, mode: ModeEnforce, allow: false},
		{name: "fail open", failClosed: false, mode: ModeEnforce, allow: true},
		{name: "dry run never blocks", failClosed: true, mode: ModeDryRun, allow: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := &failingRecorder{}
			e, err := New(ctx, dir, quiet(), WithRecorder(rec, tt.failClosed), WithMode(tt.mode))
			if err != nil {
				t.Fatal(err)
			}
			d := e.Decide(ctx, input("GET"))
			if rec.calls != 1 || d.Allow != tt.allow || (!tt.allow) != errors.Is(d.Err, ErrNotRecorded) {
				t.Fatalf("%d calls, decision %+v", rec.calls, d)
			}
		})
	}
}

// The local decision log holds no more than the export: masked, with
// OPA's "erased".
func TestDecisionLogIsMasked(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	write(t, dir, "authz.rego", webToAPI)
	m, _ := ParseMask(DefaultMask)
	var buf bytes.Buffer
	e, err := New(ctx, dir, quiet(), WithDecisionLog(m.Writer(&buf), nil))
	if err != nil {
		t.Fatal(err)
	}
	in := input("GET")
	in.Request.Headers["authorization"] = "Bearer t0k3n"
	e.Decide(ctx, in)
	e.Flush()
	var line struct {
		Input  Input    `json:"input"`
		Erased []string `json:"erased"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	if strings.Contains(buf.String(), "t0k3n") || len(line.Erased) != 1 || line.Input.Request.Headers["x"] != "y" {
		t.Fatalf("decision log line %s", buf.Bytes())
	}
}

// An evaluation error can quote the value a builtin failed on (OPA's
// strict builtin errors: to_number, time.parse_rfc3339_ns...): when that
// value is a request header, the error that goes to the decision log,
// the audit record and the sidecar's log names the header instead, so a
// token does not leave by the error path either.
func TestEvaluationErrorsDoNotLeakMaskedValues(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name, rule, header, secret string
	}{
		{"to_number, whole value", `allow if to_number(input.request.headers.authorization) > 0`, "authorization", "Bearer s3cr3t-t0k3n-abcdef"},
		{"time parse, token part", `allow if time.parse_rfc3339_ns(split(input.request.headers.authorization, " ")[1]) > 0`, "authorization", "Bearer s3cr3t-t0k3n-abcdef"},
		{"a cookie", `allow if to_number(input.request.headers.cookie) > 0`, "cookie", "session=s3cr3t-t0k3n-abcdef"},
		{"a query token", `allow if to_number(input.request.query.access_token[0]) > 0`, "", "s3cr3t-t0k3n-abcdef"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "authz.rego", "package sigil.authz\n\ndefault allow := false\n\n"+tt.rule+"\n")
			m, _ := ParseMask(DefaultMask)
			var buf bytes.Buffer
			e, err := New(ctx, dir, quiet(), WithDecisionLog(m.Writer(&buf), nil))
			if err != nil {
				t.Fatal(err)
			}
			in := input("GET")
			want := "input.request.query.access_token"
			if tt.header != "" {
				in.Request.Headers[tt.header] = tt.secret
				want = "input.request.headers." + tt.header
			} else {
				in.Request.Path, in.Request.RawQuery = "/?access_token="+tt.secret, "access_token="+tt.secret
			}
			d := e.Decide(ctx, in)
			e.Flush()
			if d.Err == nil {
				t.Fatalf("no evaluation error: %+v", d)
			}
			// The default mask leaves the query in the input (docs/audit.md):
			// there only the error is checked.
			if strings.Contains(d.Err.Error(), "s3cr3t") || tt.header != "" && strings.Contains(buf.String(), "s3cr3t") {
				t.Fatalf("the header's value left through the error:\nerror: %v\nlog: %s", d.Err, buf.Bytes())
			}
			if !strings.Contains(d.Err.Error(), want) {
				t.Fatalf("error %q does not say which header it quoted", d.Err)
			}
		})
	}
}
