package naming

// The SPIFFE ID scheme of DESIGN.md: workload IDs of the form
// spiffe://<td>/ns/<ns>/sa/<sa>, agent IDs under
// /sigil/agent/<attestor>/<node>, and the server's own ID. Server, agent
// and proxy build and recognise IDs only through here.

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// AgentPathPrefix is the path under which agent IDs live; workload entries
// may not use it.
const AgentPathPrefix = "/sigil/"

// ServerID returns the server's ID in td.
func ServerID(td spiffeid.TrustDomain) spiffeid.ID {
	id, _ := spiffeid.FromSegments(td, "sigil", "server")
	return id
}

// AgentID returns the ID of the agent that attestor attested on node.
func AgentID(td spiffeid.TrustDomain, attestor, node string) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "sigil", "agent", attestor, node)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("naming: agent %s/%s: %w", attestor, node, err)
	}
	return id, nil
}

// IsAgentID reports whether id is an agent ID of td.
func IsAgentID(td spiffeid.TrustDomain, id spiffeid.ID) bool {
	return id.MemberOf(td) && strings.HasPrefix(id.Path(), AgentPathPrefix+"agent/") && strings.Count(id.Path(), "/") == 4
}

// IsReservedID reports whether id is one Sigil keeps for itself (server and
// agents), which registration entries may not grant.
func IsReservedID(id spiffeid.ID) bool {
	return strings.HasPrefix(id.Path()+"/", AgentPathPrefix)
}

// Sentinel errors of ParseWorkloadID and ParseAgentID, for callers that branch.
var (
	ErrOtherTrustDomain = errors.New("not in the trust domain")
	ErrNoPath           = errors.New("a workload ID needs a path (spiffe://<td>/<path>); the bare trust domain ID names no workload")
	ErrReserved         = errors.New("paths under " + AgentPathPrefix + " are reserved for Sigil's server and agents")
	ErrNotAgent         = errors.New("not an agent ID")
)

// ParseWorkloadID parses s as an ID a registration entry may grant a
// workload in td, with SPIRE's rules for entry IDs: a valid SPIFFE ID
// (go-spiffe's parser: lower-case scheme and trust domain, no empty, "." or
// ".." segment, no trailing slash), a member of td, with a non-empty path
// (the X509-SVID specification §2: a leaf's ID has a path; SPIRE: "path
// cannot be empty"), outside the reserved /sigil/ namespace (SPIRE reserves
// /spire/ the same way). Errors say which rule failed and wrap the
// sentinels above.
func ParseWorkloadID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("naming: %q: %w", s, err)
	}
	if err := CheckWorkloadID(td, id); err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

// CheckWorkloadID applies ParseWorkloadID's rules to an ID already parsed.
func CheckWorkloadID(td spiffeid.TrustDomain, id spiffeid.ID) error {
	switch {
	case id.IsZero():
		return fmt.Errorf("naming: empty ID: %w", ErrNoPath)
	case !id.MemberOf(td):
		return fmt.Errorf("naming: %s: %w %s", id, ErrOtherTrustDomain, td)
	case id.Path() == "":
		return fmt.Errorf("naming: %s: %w", id, ErrNoPath)
	case IsReservedID(id):
		return fmt.Errorf("naming: %s: %w", id, ErrReserved)
	}
	return nil
}

// ParseAgentID parses s as the ID of an agent of td:
// spiffe://<td>/sigil/agent/<attestor>/<node>.
func ParseAgentID(td spiffeid.TrustDomain, s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("naming: %q: %w", s, err)
	}
	if !id.MemberOf(td) {
		return spiffeid.ID{}, fmt.Errorf("naming: %s: %w %s", id, ErrOtherTrustDomain, td)
	}
	if !IsAgentID(td, id) {
		return spiffeid.ID{}, fmt.Errorf("naming: %s: %w of %s (want spiffe://%s%sagent/<attestor>/<node>)", id, ErrNotAgent, td, td, AgentPathPrefix)
	}
	return id, nil
}

// WorkloadID returns spiffe://<td>/ns/<namespace>/sa/<serviceAccount>.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
}

// NamespaceServiceAccount returns the namespace and service account of a
// workload ID of the Kubernetes form spiffe://<td>/ns/<ns>/sa/<sa>, exactly
// (Istio's rule: no prefix, no suffix); ok is false for any other path.
// Server (which services an identity may serve) and proxy (the policy's
// source.namespace) read IDs through here, so they agree.
func NamespaceServiceAccount(id spiffeid.ID) (namespace, serviceAccount string, ok bool) {
	parts := strings.Split(id.Path(), "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "sa" {
		return "", "", false
	}
	return parts[2], parts[4], true
}

// ValidateNodeName reports whether name can be a node name: a valid path
// segment of letters, digits, '.', '-' and '_'.
func ValidateNodeName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("naming: node name must be 1 to 253 characters, got %d", len(name))
	}
	if err := spiffeid.ValidatePathSegment(name); err != nil {
		return fmt.Errorf("naming: node name %q: %w", name, err)
	}
	return nil
}
