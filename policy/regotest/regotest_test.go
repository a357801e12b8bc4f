package regotest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestRunBoundedByContext: Timeout bounds one test, and ctx bounds all of
// them, so a policy of many tests that each run until their Timeout
// cannot hold the caller (the server's apply) for tests × Timeout.
func TestRunBoundedByContext(t *testing.T) {
	var src strings.Builder
	src.WriteString("package sigil.authz_test\n\n")
	for i := range 4 {
		fmt.Fprintf(&src, "test_slow_%d if {\n\tevery a in numbers.range(1, 100000) {\n\t\tevery b in numbers.range(1, 100000) {\n\t\t\ta + b > %d\n\t\t}\n\t}\n}\n\n", i, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	ran, failed, err := Run(ctx, map[string]string{"slow_test.rego": src.String()})
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Run took %s under a 500ms context", took)
	}
	if err == nil && len(failed) != ran {
		t.Fatalf("ran %d, failed %d: a test cut off by the context passed", ran, len(failed))
	}
}

// TestPolicyNetworkBuiltinsRefused: a test that calls http.send (or
// net.lookup_ip_addr, opa.runtime) is refused before it runs, so applying
// a Policy cannot make the server send requests or read its environment.
func TestPolicyNetworkBuiltinsRefused(t *testing.T) {
	for _, call := range []string{
		`http.send({"method": "GET", "url": "http://127.0.0.1:1/"})`,
		`net.lookup_ip_addr("localhost")`,
		`opa.runtime()`,
	} {
		src := "package sigil.authz_test\n\ntest_reach if {\n\tx := " + call + "\n\tx != null\n}\n"
		_, _, err := Run(context.Background(), map[string]string{"reach_test.rego": src})
		if err == nil || !strings.Contains(err.Error(), "undefined function") || !strings.Contains(err.Error(), "reach_test.rego:4") {
			t.Errorf("%s: err = %v, want undefined function at reach_test.rego:4", call, err)
		}
	}
}
