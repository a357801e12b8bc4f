package policy

import (
	"context"
	"strings"
	"testing"
)

// TestPolicyNetworkBuiltinsRefused: a policy that calls http.send,
// net.lookup_ip_addr or opa.runtime does not compile, so no sidecar calls
// out on a request and `sigil policy check` names the call.
func TestPolicyNetworkBuiltinsRefused(t *testing.T) {
	for _, call := range []string{
		`http.send({"method": "GET", "url": "http://127.0.0.1:1/"})`,
		`net.lookup_ip_addr("localhost")`,
		`opa.runtime()`,
	} {
		src := "package sigil.authz\n\nallow if {\n\tx := " + call + "\n\tx != null\n}\n"
		_, err := Compile(context.Background(), map[string]string{"authz.rego": src})
		if err == nil || !strings.Contains(err.Error(), "undefined function") || !strings.Contains(err.Error(), "authz.rego:4") {
			t.Errorf("%s: err = %v, want undefined function at authz.rego:4", call, err)
		}
	}
}
