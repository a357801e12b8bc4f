package server

import (
	"strings"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
)

// A reported sidecar's namespace is its identity's: the server takes the
// reported one only for an ID without one, and refuses a contradiction
// even from its own agent.
func TestReportedProxyNamespace(t *testing.T) {
	for _, tt := range []struct {
		id, ns, want, err string
	}{
		{"spiffe://example.org/ns/prod/sa/api", "", "prod", ""},
		{"spiffe://example.org/ns/prod/sa/api", "prod", "prod", ""},
		{"spiffe://example.org/ns/prod/sa/api", "staging", "", "disagrees with the workload's identity"},
		{"spiffe://example.org/api", "", "default", ""},
		{"spiffe://example.org/api", "staging", "staging", ""},
		{"spiffe://example.org/api", "../x", "", "RFC 1123 label"},
		{"not an id", "", "", "scheme"},
	} {
		got, err := proxyNamespace(&agentv1.Proxy{SpiffeId: tt.id, Namespace: tt.ns})
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s as %q: err %v, want %q", tt.id, tt.ns, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("%s as %q: %q %v, want %q", tt.id, tt.ns, got, err, tt.want)
		}
	}
}
