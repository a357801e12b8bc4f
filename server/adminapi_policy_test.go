package server

import (
	"context"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/traffic"
)

// A Policy is compiled and its own tests run before apply accepts it: a
// policy that does not compile, or a failing test, is refused naming the
// resource and the test (package.rule and file:row).
func TestPolicyResourceRefusedWithFailingTestName(t *testing.T) {
	const allowGet = "package sigil.authz\n\ndefault allow := false\n\nallow if input.request.method == \"GET\"\n"
	tests := []struct {
		name    string
		modules map[string]string
		want    []string // in the error; none: accepted
	}{
		{"passing tests", map[string]string{"authz.rego": allowGet,
			"authz_test.rego": "package sigil.authz_test\n\nimport data.sigil.authz\n\ntest_get if authz.allow with input as {\"request\": {\"method\": \"GET\"}}\n"}, nil},
		{"failing test", map[string]string{"authz.rego": allowGet,
			"authz_test.rego": "package sigil.authz_test\n\nimport data.sigil.authz\n\ntest_get if authz.allow with input as {\"request\": {\"method\": \"GET\"}}\n\ntest_post if authz.allow with input as {\"request\": {\"method\": \"POST\"}}\n"},
			[]string{"Policy default/authz: 1 of its 2 tests failed", "sigil.authz_test.test_post (authz_test.rego:7): FAIL"}},
		{"test error", map[string]string{"authz.rego": allowGet,
			"authz_test.rego": "package sigil.authz_test\n\ntest_div if 1 / 0\n"},
			[]string{"sigil.authz_test.test_div (authz_test.rego:3): error"}},
		{"does not compile", map[string]string{"authz.rego": "package sigil.authz\n\nallow if input.request.method ==\n"},
			[]string{"Policy default/authz: does not compile", "authz.rego:4: rego_parse_error"}},
		{"input typo", map[string]string{"authz.rego": "package sigil.authz\n\ndefault allow := false\n\nallow if input.request.methd == \"GET\"\n"},
			[]string{"Policy default/authz: fails sigil policy check", "authz.rego:5:", "methd"}},
		{"no allow rule", map[string]string{"authz.rego": "package sigil.authz\n\ndeny := true\n"},
			[]string{"Policy default/authz: does not compile"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := traffic.Resource{Kind: traffic.KindPolicy, Namespace: "default", Name: "authz",
				Policy: &traffic.Policy{Spec: traffic.PolicySpec{Mode: traffic.PolicyModeEnforce, Modules: tt.modules}}}
			errs := checkPolicies(context.Background(), []traffic.Resource{r})
			if len(tt.want) == 0 {
				if len(errs) > 0 {
					t.Fatalf("refused: %v", errs)
				}
				return
			}
			if len(errs) != 1 {
				t.Fatalf("errors %v, want one", errs)
			}
			for _, w := range tt.want {
				if !strings.Contains(errs[0].Error(), w) {
					t.Errorf("error does not name %q:\n%v", w, errs[0])
				}
			}
		})
	}
}
