package policy

import (
	"context"
	"strings"
	"testing"
)

// A policy that compiles but denies everything (no allow rule, or an
// allow that can never be true) or fails every evaluation (two modules
// whose rules conflict) is refused by Compile, which `sigil policy check`
// and the sidecar's load share.
func TestPolicyCheckRefusesUselessPolicies(t *testing.T) {
	const pkg = "package sigil.authz\n\n"
	tests := []struct {
		name string
		srcs map[string]string
		want string // empty: accepted
	}{
		{"good", map[string]string{"a.rego": webToAPI}, ""},
		{"default only", map[string]string{"a.rego": pkg + "default allow := false\n"}, ""},
		{"allow in a second module", map[string]string{"a.rego": pkg + "default allow := false\n", "b.rego": pkg + "allow if input.request.method == \"GET\"\n"}, ""},
		{"same value twice", map[string]string{"a.rego": pkg + "allow := true\n", "b.rego": pkg + "allow := true\n"}, ""},
		{"no allow rule", map[string]string{"a.rego": pkg + "permit if input.request.method == \"GET\"\n"}, "no rule named allow"},
		{"allow in another package", map[string]string{"a.rego": pkg + "x := 1\n", "b.rego": "package sigil.other\n\nallow := true\n"}, "no rule named allow"},
		{"allow is a set", map[string]string{"a.rego": pkg + "allow contains \"x\"\n"}, "allow contains"},
		{"allow is a function", map[string]string{"a.rego": pkg + "allow(x) := true if x\n"}, "function"},
		{"allow is a string", map[string]string{"a.rego": pkg + "allow := \"yes\"\n"}, "not a boolean"},
		{"allow is a ref head", map[string]string{"a.rego": pkg + "allow.web := true\n"}, "allow.web"},
		{"complete-rule conflict", map[string]string{"a.rego": pkg + "allow := true\n", "b.rego": pkg + "allow := false\n"}, "conflict"},
		{"two defaults", map[string]string{"a.rego": pkg + "default allow := false\n", "b.rego": pkg + "default allow := true\n"}, "default"},
		{"conflict through a helper", map[string]string{"a.rego": pkg + "default allow := false\nallow := x\n", "b.rego": pkg + "x := true\nx := false\n"}, "conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(context.Background(), tt.srcs)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}

// The sidecar refuses such a policy on reload: the old one stays in
// force and the reload is counted as refused.
func TestPolicyCheckRefusesOnReload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	write(t, dir, "authz.rego", webToAPI)
	var refused int
	e, err := New(ctx, dir, quiet(), WithReloadHook(func(ok bool) {
		if !ok {
			refused++
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	rev := e.Revision()
	write(t, dir, "conflict.rego", "package sigil.authz\n\nallow := false\n")
	write(t, dir, "more.rego", "package sigil.authz\n\nallow := true\n")
	if err := e.Reload(ctx); err == nil || !strings.Contains(err.Error(), "conflict") {
		t.Fatalf("reload: %v", err)
	}
	if e.Revision() != rev || refused != 1 {
		t.Fatalf("revision %s (was %s), %d refused", e.Revision(), rev, refused)
	}
	if d := e.Decide(ctx, input("GET")); !d.Allow || d.Err != nil {
		t.Fatalf("the old policy is not in force: %+v", d)
	}
}
