package main

import (
	"io"
	"strings"
	"testing"
)

// --k8s-auto-identity is on by default and takes a boolean; turned off
// without --kubernetes it is refused, not accepted and ignored.
func TestAutoIdentityFlagNeedsKubernetes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--k8s-auto-identity=false"}, "--k8s-auto-identity=false needs --kubernetes"},
		{[]string{"--k8s-auto-identity=maybe"}, `invalid argument "maybe"`},
	} {
		root := newRoot()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs(append([]string{"run", "--data-dir", t.TempDir(), "--trust-domain", "example.org"}, tc.args...))
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %v: %v, want %q", tc.args, err, tc.want)
		}
	}
	var off bool
	s := offSwitch{&off}
	for v, wantOff := range map[string]bool{"true": false, "false": true, "0": true, "1": false} {
		if err := s.Set(v); err != nil || off != wantOff || s.String() != map[bool]string{false: "true", true: "false"}[wantOff] {
			t.Errorf("Set(%q): off=%v String=%s err=%v", v, off, s.String(), err)
		}
	}
}
