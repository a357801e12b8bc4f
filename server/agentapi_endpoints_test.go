package server

import (
	"strings"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/server/registry"
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

// A grant "NAME" covers the identity's own namespace only; another
// namespace needs a grant "NAME.NAMESPACE", so an ID without a namespace
// cannot claim prod's reviews with --namespace prod and a bare grant.
func TestReportedProxyNamespaceGrants(t *testing.T) {
	allowed := allowedServices([]registry.Entry{
		{SPIFFEID: "spiffe://example.org/ns/prod/sa/reviews"},
		{SPIFFEID: "spiffe://example.org/billing", Services: []string{"billing"}},
		{SPIFFEID: "spiffe://example.org/ratings", Services: []string{"ratings.prod"}},
	})
	for _, tt := range []struct {
		id, service, ns string
		want            bool
	}{
		{"spiffe://example.org/ns/prod/sa/reviews", "reviews", "prod", true},
		{"spiffe://example.org/ns/prod/sa/reviews", "reviews", "staging", false},
		{"spiffe://example.org/billing", "billing", "default", true},
		{"spiffe://example.org/billing", "billing", "prod", false},
		{"spiffe://example.org/ratings", "ratings", "prod", true},
		{"spiffe://example.org/ratings", "ratings", "default", false},
		{"spiffe://example.org/nobody", "ratings", "prod", false},
	} {
		if got := mayServe(allowed, tt.id, tt.service, tt.ns); got != tt.want {
			t.Errorf("%s serving %s.%s: %v, want %v", tt.id, tt.service, tt.ns, got, tt.want)
		}
	}
	for svc, ok := range map[string]bool{"reviews": true, "reviews.prod": true, "reviews.prod.svc": false, "reviews.": false, ".prod": false, "Reviews.prod": false} {
		_, err := ValidateEntry(td, adminv1.EntryRequest{SPIFFEID: "spiffe://example.org/a", ParentID: agent1, Selectors: []string{"unix:uid:1"}, Services: []string{svc}})
		if (err == nil) != ok {
			t.Errorf("grant %q: %v, want accepted %v", svc, err, ok)
		}
	}
}
