package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

const replayData = "../../policy/replay/testdata/"

// runPolicy runs `sigil policy ARGS...` with stdin and returns its output
// (stdout and stderr) and the error that makes the exit status 1.
func runPolicy(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newPolicy()
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// sigil policy diff exits non-zero when the proposed policy denies what
// the base allows, unless --allow-tightening; a loosening or no change
// exits 0; the markdown names the one blocked request class.
func TestPolicyDiffExitStatus(t *testing.T) {
	log := replayData + "decisions.log"
	raw, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	base, proposed, loosened := "--base="+replayData+"base", "--proposed="+replayData+"proposed", "--proposed="+replayData+"loosened"
	for _, tc := range []struct {
		name    string
		stdin   string
		args    []string
		wantErr string
		wantOut []string
	}{
		{"tightening fails", "", []string{"diff", base, proposed, "--replay", log}, "denies 4 recorded decisions the base allows (request classes: 1); pass --allow-tightening",
			[]string{"allow → deny  4 decisions", "request:     POST /v1/orders", "18 decisions replayed: 14 unchanged, 4 changed"}},
		{"allowed tightening", "", []string{"diff", base, proposed, "--replay", log, "--allow-tightening", "--format", "markdown"}, "",
			[]string{"### Policy diff: `", "| allow → deny | 4 | `spiffe://example.org/ns/default/sa/web` | `api (spiffe://example.org/ns/default/sa/api)` | `POST` | `/v1/orders` |"}},
		{"loosening passes, from stdin", string(raw), []string{"diff", base, loosened, "--replay", "-", "--format", "json"}, "",
			[]string{`"deny_to_allow": 4`, `"path": "/healthz"`, `"example_at": "stdin:`}},
		{"no change", "", []string{"diff", base, "--proposed=" + replayData + "base", log}, "", []string{"0 changed"}},
		{"missing policy", "", []string{"diff", "--base=nowhere", proposed, log}, "--base: replay: nowhere: policy: stat nowhere: no such file or directory", nil},
		{"broken policy", "", []string{"diff", base, "--proposed=" + replayData + "broken", log}, "--proposed: replay: " + replayData + "broken does not compile: policy: 1 error occurred: " + replayData + "broken/authz.rego:5: rego_parse_error", nil},
		{"not a decision log", "", []string{"diff", base, proposed, replayData + "base/authz.rego"}, "base/authz.rego: not a decision log: " + replayData + "base/authz.rego:1: invalid character", nil},
		{"nothing to replay", "\n", []string{"diff", base, proposed, "-"}, "no decision to replay in [-]", nil},
		{"bad format", "", []string{"diff", base, proposed, log, "--format", "html"}, `--format "html": want text, markdown or json`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runPolicy(t, tc.stdin, tc.args...)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
