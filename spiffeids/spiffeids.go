// Package spiffeids holds the SPIFFE ID scheme of DESIGN.md: workload IDs
// of the form spiffe://<td>/ns/<ns>/sa/<sa>, agent IDs under
// /sigil/agent/<attestor>/<node>, and the server's own ID. Server, agent and
// proxy build and recognise IDs only through here.
package spiffeids

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// AgentPathPrefix is the path under which agent IDs live; workload entries
// may not use it.
const AgentPathPrefix = "/sigil/"

// Server returns the server's ID in td.
func Server(td spiffeid.TrustDomain) spiffeid.ID {
	id, _ := spiffeid.FromSegments(td, "sigil", "server")
	return id
}

// Agent returns the ID of the agent that attestor attested on node.
func Agent(td spiffeid.TrustDomain, attestor, node string) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "sigil", "agent", attestor, node)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("spiffeids: agent %s/%s: %w", attestor, node, err)
	}
	return id, nil
}

// IsAgent reports whether id is an agent ID of td.
func IsAgent(td spiffeid.TrustDomain, id spiffeid.ID) bool {
	return id.MemberOf(td) && strings.HasPrefix(id.Path(), AgentPathPrefix+"agent/") && strings.Count(id.Path(), "/") == 4
}

// IsReserved reports whether id is one Sigil keeps for itself (server and
// agents), which registration entries may not grant.
func IsReserved(id spiffeid.ID) bool {
	return strings.HasPrefix(id.Path()+"/", AgentPathPrefix)
}

// Workload returns spiffe://<td>/ns/<namespace>/sa/<serviceAccount>.
func Workload(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
}

// ValidNodeName reports whether name can be a node name: a valid path
// segment of letters, digits, '.', '-' and '_'.
func ValidNodeName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("spiffeids: node name must be 1 to 253 characters, got %d", len(name))
	}
	if err := spiffeid.ValidatePathSegment(name); err != nil {
		return fmt.Errorf("spiffeids: node name %q: %w", name, err)
	}
	return nil
}

// WorkloadNamespace returns the namespace of a workload ID
// spiffe://<td>/ns/<namespace>/sa/<service-account>; ok is false for an ID
// of any other form.
func WorkloadNamespace(id spiffeid.ID) (namespace string, ok bool) {
	parts := strings.Split(id.Path(), "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "sa" || parts[2] == "" || parts[4] == "" {
		return "", false
	}
	return parts[2], true
}
