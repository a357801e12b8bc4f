package naming

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Kubernetes' object name rules: metadata.name a DNS-1123 subdomain
// (253), metadata.namespace a DNS-1123 label (63).
func TestResourceNameValidationRules(t *testing.T) {
	for _, ok := range []string{"a", "0", "a-b", "a.b", "a-0.b-1", strings.Repeat("x", 63)} {
		if !ValidName(ok) {
			t.Errorf("name %q refused", ok)
		}
	}
	for _, bad := range []string{"", "-a", "a-", ".a", "a.", "a..b", "a_b", "A", "a b", "é", "a.-b"} {
		if ValidName(bad) {
			t.Errorf("name %q accepted", bad)
		}
	}
	for _, ok := range []string{"default", "team-a", "a1"} {
		if !ValidNamespace(ok) {
			t.Errorf("namespace %q refused", ok)
		}
	}
	for _, bad := range []string{"", "a.b", "-a", "Default", "a/b"} {
		if ValidNamespace(bad) {
			t.Errorf("namespace %q accepted", bad)
		}
	}
}

// Labels as Kubernetes has them: what sidecars register and subsets
// select.
func TestResourceNameValidationLabels(t *testing.T) {
	long := strings.Repeat("v", 64)
	tests := []struct {
		k, v string
		ok   bool
	}{
		{"version", "v1", true},
		{"app.kubernetes.io/name", "api", true},
		{"tier", "", true},
		{"Version_2", "1.0-rc_1", true},
		{"", "x", false},
		{"a b", "x", false},
		{"/name", "x", false},
		{"Bad.Prefix/name", "x", false},
		{"version", "\x1b]0;x\a", false},
		{"version", "a\nb", false},
		{"version", "-v1", false},
		{"version", long, false},
		{long, "x", false},
	}
	for _, tt := range tests {
		if err := ValidateLabel(tt.k, tt.v); (err == nil) != tt.ok {
			t.Errorf("ValidateLabel(%q, %q) = %v, want ok %v", tt.k, tt.v, err, tt.ok)
		} else if err != nil && strings.ContainsAny(err.Error(), "\x1b\x07\n") {
			t.Errorf("error %q carries a control character", err)
		}
	}
}

// Every error of naming names the package first, whatever the rule.
func TestOneParserPerNameErrorPrefix(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	errs := map[string]error{}
	_, errs["ParseEndpoint"] = ParseEndpoint("x")
	_, errs["ParseWorkloadID"] = ParseWorkloadID(td, "spiffe://example.org/sigil/x")
	_, errs["ParseWorkloadID syntax"] = ParseWorkloadID(td, "nope")
	errs["CheckWorkloadID"] = CheckWorkloadID(td, spiffeid.ID{})
	_, errs["ParseAgentID"] = ParseAgentID(td, "spiffe://other.org/sigil/agent/a/b")
	_, errs["ParseAnyAgentID"] = ParseAnyAgentID("spiffe://example.org/ns/a/sa/b")
	_, errs["ParseAnyWorkloadID"] = ParseAnyWorkloadID("spiffe://example.org")
	_, errs["AgentID"] = AgentID(td, "join_token", "a/b")
	_, errs["WorkloadID"] = WorkloadID(td, "..", "b")
	errs["ValidateNodeName"] = ValidateNodeName("..")
	errs["ValidateLabel"] = ValidateLabel("a b", "")
	_, errs["NewResolver"] = NewResolver("Bad", "cluster.local")
	_, errs["Resolver.Authority"] = Resolver{}.Authority("a..b")
	_, errs["Resolver.Host"] = Resolver{}.Host("api.github.com")
	for name, err := range errs {
		if err == nil || !strings.HasPrefix(err.Error(), "naming: ") {
			t.Errorf("%s: %v, want an error starting with %q", name, err, "naming: ")
		}
	}
}
