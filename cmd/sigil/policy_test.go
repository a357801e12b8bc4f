package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `sigil policy check` on a policy directory (two packages and a test
// file) whose rule reads input.request.methd: an error naming the file,
// line and column and the field meant, and a non-zero exit; its own tests
// pass, which is why the check exists.
func TestPolicyCheckNamesInputTypos(t *testing.T) {
	dir := filepath.Join("testdata", "policy-typo")
	out, err := runPolicy(t, "", "check", dir)
	want := filepath.Join(dir, "authz.rego") + ":17:2: input.request.methd is not in Sigil's input document (docs/policy-input.md); did you mean input.request.method?"
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("check: %v\n%s\nwant a line %q", err, out, want)
	}
	if !strings.Contains(err.Error(), "1 errors") {
		t.Errorf("error %q does not count the error", err)
	}
	if out, err := runPolicy(t, "", "test", dir); err != nil || !strings.Contains(out, "2/2 passed") {
		t.Fatalf("the typo's own tests: %v\n%s", err, out)
	}
}

// The demo policy passes clean: no error, no warning, even with
// --fail-on-warn.
func TestPolicyCheckDemoPolicyClean(t *testing.T) {
	out, err := runPolicy(t, "", "check", "--fail-on-warn", "../../demo/policy")
	if err != nil || !strings.Contains(out, "ok (1 files, 1 test files, 0 warnings)") {
		t.Fatalf("demo policy: %v\n%s", err, out)
	}
}

// Warnings (an unused rule) are printed and fail the check only with
// --fail-on-warn.
func TestPolicyCheckFailOnWarn(t *testing.T) {
	dir := t.TempDir()
	src := "package sigil.authz\n\ndefault allow := false\n\nallow if input.request.method == \"GET\"\n\nadmin if input.source.namespace == \"ops\"\n"
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	warning := "authz.rego:7:1: warning: data.sigil.authz.admin is never used"
	out, err := runPolicy(t, "", "check", dir)
	if err != nil || !strings.Contains(out, warning) || !strings.Contains(out, "ok (1 files, 0 test files, 1 warnings)") {
		t.Fatalf("without --fail-on-warn: %v\n%s", err, out)
	}
	out, err = runPolicy(t, "", "check", "--fail-on-warn", dir)
	if err == nil || !strings.Contains(out, warning) {
		t.Fatalf("with --fail-on-warn: %v\n%s", err, out)
	}
}
