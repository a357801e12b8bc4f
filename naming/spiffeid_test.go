package naming

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestIDs(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	a, err := AgentID(td, "join_token", "node1")
	if err != nil || a.String() != "spiffe://example.org/sigil/agent/join_token/node1" || !IsAgentID(td, a) {
		t.Fatalf("agent id %s %v", a, err)
	}
	if _, err := AgentID(td, "join_token", "a/b"); err == nil {
		t.Fatal("node with a slash accepted")
	}
	w, _ := WorkloadID(td, "default", "web")
	if IsAgentID(td, w) || IsReservedID(w) || w.String() != "spiffe://example.org/ns/default/sa/web" {
		t.Fatalf("workload id %s", w)
	}
	if !IsReservedID(ServerID(td)) || IsAgentID(td, ServerID(td)) {
		t.Fatal("server id classification")
	}
	other := spiffeid.RequireTrustDomainFromString("other.org")
	if IsAgentID(other, a) {
		t.Fatal("agent of another trust domain")
	}
	for _, bad := range []string{"", "..", "a b"} {
		if ValidateNodeName(bad) == nil {
			t.Errorf("node name %q accepted", bad)
		}
	}
}

func TestWorkloadIDRequiresPath(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	tests := []struct {
		in   string
		want error // nil: accepted
	}{
		{"spiffe://example.org/ns/default/sa/web", nil},
		{"spiffe://example.org/anything/else", nil},
		{"spiffe://example.org", ErrNoPath},
		{"spiffe://other.org/ns/default/sa/web", ErrOtherTrustDomain},
		{"spiffe://example.org/sigil/agent/join_token/node1", ErrReserved},
		{"spiffe://example.org/sigil/server", ErrReserved},
		{"spiffe://example.org/sigil", ErrReserved},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := ParseWorkloadID(td, tt.in)
			if tt.want == nil {
				if err != nil || id.String() != tt.in {
					t.Fatalf("ParseWorkload = %s, %v", id, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseWorkload error %v, want %v", err, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "spiffe://example.org/", "spiffe://example.org/a/../b", "spiffe://EXAMPLE.org/a", "http://example.org/a", "spiffe://example.org/a//b"} {
		if _, err := ParseWorkloadID(td, bad); err == nil {
			t.Errorf("ParseWorkloadID(%q) accepted", bad)
		}
	}
	if err := CheckWorkloadID(td, spiffeid.ID{}); !errors.Is(err, ErrNoPath) {
		t.Errorf("CheckWorkloadID(zero) = %v", err)
	}
}

func TestParseAgent(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	tests := []struct {
		in   string
		want error
	}{
		{"spiffe://example.org/sigil/agent/join_token/node1", nil},
		{"spiffe://other.org/sigil/agent/join_token/node1", ErrOtherTrustDomain},
		{"spiffe://example.org/ns/default/sa/web", ErrNotAgent},
		{"spiffe://example.org/sigil/agent/join_token", ErrNotAgent},
		{"spiffe://example.org/sigil/agent/join_token/node1/x", ErrNotAgent},
		{"spiffe://example.org/sigil/server", ErrNotAgent},
		{"spiffe://example.org", ErrNotAgent},
	}
	for _, tt := range tests {
		_, err := ParseAgentID(td, tt.in)
		if (tt.want == nil && err != nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("ParseAgentID(%q) = %v, want %v", tt.in, err, tt.want)
		}
	}
}

// FuzzParseWorkload checks the ID parsers together: a workload ID is
// never an agent ID, reads back as given, and the namespace and service
// account read from it build the same ID again.
func FuzzParseWorkload(f *testing.F) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	for _, s := range []string{"spiffe://example.org/ns/a/sa/b", "spiffe://example.org", "spiffe://example.org/sigil/x", "spiffe://o.org/a", "spiffe://example.org/%41",
		"spiffe://example.org/x/ns/a/sa/b", "spiffe://example.org/ns/a/sa/b/c", "spiffe://example.org/sigil/agent/join_token/n1", "spiffe://o.org/sigil/agent/a/b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if id, err := ParseAnyAgentID(s); err == nil {
			if id.String() != s || !IsAgentID(id.TrustDomain(), id) || IsAgentID(td, id) != id.MemberOf(td) {
				t.Fatalf("ParseAnyAgentID(%q) accepted %s", s, id)
			}
			if _, err := ParseAnyWorkloadID(s); err == nil {
				t.Fatalf("%q is both a workload and an agent ID", s)
			}
		}
		if any, err := ParseAnyWorkloadID(s); err == nil {
			if ns, sa, ok := NamespaceServiceAccount(any); ok {
				if again, err := WorkloadID(any.TrustDomain(), ns, sa); err != nil || again != any {
					t.Fatalf("%q: ns %q sa %q build %s, %v", s, ns, sa, again, err)
				}
			} else if ns != "" || sa != "" {
				t.Fatalf("%q: not a workload of a namespace, yet %q %q", s, ns, sa)
			}
		}
		id, err := ParseWorkloadID(td, s)
		if err != nil {
			return
		}
		// Whatever passes is in td, has a path, is not reserved, and reads back the same.
		if !id.MemberOf(td) || id.Path() == "" || IsReservedID(id) || id.String() != s {
			t.Fatalf("ParseWorkloadID(%q) accepted %s", s, id)
		}
		if _, err := ParseAgentID(td, s); err == nil {
			t.Fatalf("%q is both a workload and an agent ID", s)
		}
	})
}

func TestWorkloadIDRequiresPathNamespaceServiceAccount(t *testing.T) {
	for _, tt := range []struct {
		id, ns, sa string
		ok         bool
	}{
		{"spiffe://example.org/ns/prod/sa/web", "prod", "web", true},
		{"spiffe://example.org/evil/ns/prod/sa/api", "", "", false},
		{"spiffe://example.org/ns/prod/sa/api/extra", "", "", false},
		{"spiffe://example.org/ns/prod", "", "", false},
		{"spiffe://example.org/ns/prod/sa", "", "", false},
		{"spiffe://example.org/ns/prod/xa/web", "", "", false},
		{"spiffe://example.org/nsx/prod/sa/web", "", "", false},
		{"spiffe://example.org/ns/Not_A_Label/sa/web", "Not_A_Label", "web", true},
		{"spiffe://example.org/sa/web/ns/prod", "", "", false},
		{"spiffe://example.org", "", "", false},
	} {
		ns, sa, ok := NamespaceServiceAccount(spiffeid.RequireFromString(tt.id))
		if ns != tt.ns || sa != tt.sa || ok != tt.ok {
			t.Errorf("%s: %q %q %v", tt.id, ns, sa, ok)
		}
	}
}

// The parsers for callers that do not know the trust domain (the evict
// CLI, --upstream's identity) apply the same rules but the domain's.
func TestWorkloadIDRequiresPathAnyTrustDomain(t *testing.T) {
	for _, tt := range []struct {
		in              string
		agent, workload bool
	}{
		{"spiffe://example.org/sigil/agent/join_token/node1", true, false},
		{"spiffe://other.org/sigil/agent/k8s_psat/c/n.1", true, false},
		{"spiffe://example.org/sigil/agent/join_token", false, false},
		{"spiffe://example.org/sigil/agent/a/b/c", false, false},
		{"spiffe://example.org/sigil/server", false, false},
		{"spiffe://example.org/ns/default/sa/web", false, true},
		{"spiffe://other.org/legacy", false, true},
		{"spiffe://example.org", false, false},
		{"not-an-id", false, false},
		{"spiffe://example.org/ns//sa/web", false, false},
		{"", false, false},
	} {
		if _, err := ParseAnyAgentID(tt.in); (err == nil) != tt.agent || err != nil && !strings.HasPrefix(err.Error(), "naming: ") {
			t.Errorf("ParseAnyAgentID(%q) = %v, want ok %v", tt.in, err, tt.agent)
		}
		if _, err := ParseAnyWorkloadID(tt.in); (err == nil) != tt.workload || err != nil && !strings.HasPrefix(err.Error(), "naming: ") {
			t.Errorf("ParseAnyWorkloadID(%q) = %v, want ok %v", tt.in, err, tt.workload)
		}
	}
}

func TestK8sPSATAgentID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	id, err := K8sPSATAgentID(td, "prod-eu", "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := id.String(), "spiffe://example.org/sigil/agent/k8s_psat/prod-eu/node-1"; got != want {
		t.Fatalf("id = %s, want %s", got, want)
	}
	if !IsAgentID(td, id) || !IsReservedID(id) {
		t.Fatalf("%s: not recognised as an agent ID", id)
	}
	cluster, node, ok := K8sPSATNode(id)
	if !ok || cluster != "prod-eu" || node != "node-1" {
		t.Fatalf("K8sPSATNode = %q %q %v", cluster, node, ok)
	}
	if _, err := ParseAgentID(td, id.String()); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"spiffe://example.org/sigil/agent/k8s_psat/c", "spiffe://example.org/sigil/agent/k8s_psat/c/n/x", "spiffe://example.org/sigil/agent/join_token/a/b"} {
		if _, err := ParseAgentID(td, bad); err == nil {
			t.Errorf("%s: accepted as an agent ID", bad)
		}
	}
	if _, _, ok := K8sPSATNode(spiffeid.RequireFromString("spiffe://example.org/sigil/agent/join_token/n")); ok {
		t.Error("a join_token agent read as k8s_psat")
	}
	if _, err := K8sPSATAgentID(td, "a/b", "n"); err == nil {
		t.Error("a cluster with a slash accepted")
	}
}

func TestAgentNode(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	psat, _ := K8sPSATAgentID(td, "c1", "node-a")
	join, _ := AgentID(td, "join_token", "node-b")
	for _, c := range []struct {
		id             spiffeid.ID
		attestor, node string
		ok             bool
	}{
		{psat, AttestorK8sPSAT, "node-a", true},
		{join, "join_token", "node-b", true},
		{ServerID(td), "", "", false},
		{spiffeid.RequireFromString("spiffe://example.org/ns/a/sa/b"), "", "", false},
	} {
		a, n, ok := AgentNode(c.id)
		if a != c.attestor || n != c.node || ok != c.ok {
			t.Errorf("AgentNode(%s) = %q %q %v, want %q %q %v", c.id, a, n, ok, c.attestor, c.node, c.ok)
		}
	}
}
