package naming

import (
	"strings"
	"testing"
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
