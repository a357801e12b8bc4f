package spiffeids

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestIDs(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	a, err := Agent(td, "join_token", "node1")
	if err != nil || a.String() != "spiffe://example.org/sigil/agent/join_token/node1" || !IsAgent(td, a) {
		t.Fatalf("agent id %s %v", a, err)
	}
	if _, err := Agent(td, "join_token", "a/b"); err == nil {
		t.Fatal("node with a slash accepted")
	}
	w, _ := Workload(td, "default", "web")
	if IsAgent(td, w) || IsReserved(w) || w.String() != "spiffe://example.org/ns/default/sa/web" {
		t.Fatalf("workload id %s", w)
	}
	if !IsReserved(Server(td)) || IsAgent(td, Server(td)) {
		t.Fatal("server id classification")
	}
	other := spiffeid.RequireTrustDomainFromString("other.org")
	if IsAgent(other, a) {
		t.Fatal("agent of another trust domain")
	}
	for _, bad := range []string{"", "..", "a b"} {
		if ValidNodeName(bad) == nil {
			t.Errorf("node name %q accepted", bad)
		}
	}
}

func TestWorkloadNamespace(t *testing.T) {
	for id, want := range map[string]string{
		"spiffe://example.org/ns/prod/sa/web":      "prod",
		"spiffe://example.org/ns/prod/sa/web/x":    "",
		"spiffe://example.org/web":                 "",
		"spiffe://example.org/sigil/agent/jt/node": "",
		"spiffe://example.org/x/prod/sa/web":       "",
	} {
		got, ok := WorkloadNamespace(spiffeid.RequireFromString(id))
		if got != want || ok != (want != "") {
			t.Errorf("WorkloadNamespace(%s) = %q, %v; want %q", id, got, ok, want)
		}
	}
}
