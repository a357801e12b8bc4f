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
		return spiffeid.ID{}, fmt.Errorf("naming: agent %s/%s: %w", Quote(attestor), Quote(node), err)
	}
	return id, nil
}

// AttestorK8sPSAT is the node attestor of agents on Kubernetes (SPIRE's
// k8s_psat): a projected service-account token checked with the
// TokenReview API. Its agent IDs carry the cluster too.
const AttestorK8sPSAT = "k8s_psat"

// K8sPSATAgentID returns the ID of the agent attested by projected token
// on node of cluster: spiffe://<td>/sigil/agent/k8s_psat/<cluster>/<node>,
// SPIRE's form. cluster and node must be path segments (ValidateNodeName).
func K8sPSATAgentID(td spiffeid.TrustDomain, cluster, node string) (spiffeid.ID, error) {
	for _, seg := range []string{cluster, node} {
		if err := ValidateNodeName(seg); err != nil {
			return spiffeid.ID{}, err
		}
	}
	id, err := spiffeid.FromSegments(td, "sigil", "agent", AttestorK8sPSAT, cluster, node)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("naming: k8s_psat agent %s/%s: %w", Quote(cluster), Quote(node), err)
	}
	return id, nil
}

// K8sPSATNode returns the cluster and node of a k8s_psat agent ID, and
// false for any other ID.
func K8sPSATNode(id spiffeid.ID) (cluster, node string, ok bool) {
	rest, ok := strings.CutPrefix(id.Path(), AgentPathPrefix+"agent/"+AttestorK8sPSAT+"/")
	if !ok {
		return "", "", false
	}
	cluster, node, ok = strings.Cut(rest, "/")
	if !ok || strings.Contains(node, "/") {
		return "", "", false
	}
	return cluster, node, true
}

// AgentNode returns the attestor and node of an agent ID
// (/sigil/agent/<attestor>/<node> or /sigil/agent/k8s_psat/<cluster>/<node>),
// and false for any other ID.
func AgentNode(id spiffeid.ID) (attestor, node string, ok bool) {
	if _, node, ok := K8sPSATNode(id); ok {
		return AttestorK8sPSAT, node, true
	}
	if !isAgentPath(id) {
		return "", "", false
	}
	rest := strings.TrimPrefix(id.Path(), AgentPathPrefix+"agent/")
	attestor, node, _ = strings.Cut(rest, "/")
	return attestor, node, true
}

// IsAgentID reports whether id is an agent ID of td:
// spiffe://<td>/sigil/agent/<attestor>/<node>, or
// spiffe://<td>/sigil/agent/k8s_psat/<cluster>/<node>.
func IsAgentID(td spiffeid.TrustDomain, id spiffeid.ID) bool {
	return id.MemberOf(td) && isAgentPath(id)
}

// isAgentPath reports whether id's path is /sigil/agent/<attestor>/<node>
// or /sigil/agent/k8s_psat/<cluster>/<node> (go-spiffe's parser has
// already refused empty segments).
func isAgentPath(id spiffeid.ID) bool {
	if _, _, ok := K8sPSATNode(id); ok {
		return true
	}
	rest, ok := strings.CutPrefix(id.Path(), AgentPathPrefix+"agent/")
	return ok && strings.Count(rest, "/") == 1 && !strings.HasPrefix(rest, AttestorK8sPSAT+"/")
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
		return spiffeid.ID{}, fmt.Errorf("naming: %s: %w", Quote(s), err)
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
	id, err := ParseAnyAgentID(s)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if !id.MemberOf(td) {
		return spiffeid.ID{}, fmt.Errorf("naming: %s: %w %s", id, ErrOtherTrustDomain, td)
	}
	return id, nil
}

// ParseAnyAgentID parses s as an agent ID of any trust domain,
// spiffe://<td>/sigil/agent/<attestor>/<node>, for a caller that does not
// know the trust domain (`sigil-server agent evict --spiffe-id`; the
// server checks the domain when it looks the agent up).
func ParseAnyAgentID(s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("naming: %s: %w", Quote(s), err)
	}
	if !isAgentPath(id) {
		return spiffeid.ID{}, fmt.Errorf("naming: %s: %w (want spiffe://%s%sagent/<attestor>/<node>, or k8s_psat/<cluster>/<node>)", id, ErrNotAgent, id.TrustDomain(), AgentPathPrefix)
	}
	return id, nil
}

// ParseAnyWorkloadID parses s as an ID a workload of any trust domain can
// hold: ParseWorkloadID's rules but the trust domain's, for a caller
// that does not know it (`sigil-proxy --upstream NAME=ADDR@SPIFFE-ID`,
// the identity an upstream's sidecars must present).
func ParseAnyWorkloadID(s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("naming: %s: %w", Quote(s), err)
	}
	if err := CheckWorkloadID(id.TrustDomain(), id); err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

// WorkloadID returns spiffe://<td>/ns/<namespace>/sa/<serviceAccount>.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("naming: workload %s/%s: %w", Quote(namespace), Quote(serviceAccount), err)
	}
	return id, nil
}

// NamespaceServiceAccount returns the namespace and service account of a
// workload ID of the Kubernetes form spiffe://<td>/ns/<ns>/sa/<sa>,
// exactly: four segments, "ns" and "sa" in the first and third, as Istio
// writes and reads them (pkg/spiffe: "spiffe://%s/ns/%s/sa/%s"); ok is
// false for any other path (a prefix or a suffix, /x/ns/a/sa/b or
// /ns/a/sa/b/c, is another ID, not a workload of namespace a). Such IDs
// have no namespace: policy input leaves source.namespace empty, the
// server grants no service from a service account, the proxy puts their
// endpoints in the default namespace. The segments are returned as they
// are: whether ns is a valid namespace (ValidNamespace) is the caller's
// question, since an ID of a bad namespace must not fall back to the
// default one. Server (which services an identity may serve), policy
// (source.namespace) and proxy (an endpoint's namespace) read IDs only
// through here, so they agree.
func NamespaceServiceAccount(id spiffeid.ID) (namespace, serviceAccount string, ok bool) {
	rest, ok := strings.CutPrefix(id.Path(), "/ns/")
	if !ok {
		return "", "", false
	}
	ns, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", false
	}
	sa, ok := strings.CutPrefix(rest, "sa/")
	if !ok || ns == "" || sa == "" || strings.Contains(sa, "/") {
		return "", "", false
	}
	return ns, sa, true
}

// MaxNodeName is the longest node name, a Kubernetes node's (a DNS-1123
// subdomain, 253 characters).
const MaxNodeName = 253

// ValidateNodeName checks a node name, the last segment of an agent ID:
// 1 to MaxNodeName characters, a SPIFFE path segment (letters, digits,
// '.', '-' and '_'; not "." or "..", go-spiffe's ValidatePathSegment).
func ValidateNodeName(name string) error {
	if name == "" || len(name) > MaxNodeName {
		return fmt.Errorf("naming: node name must be 1 to %d characters, got %d", MaxNodeName, len(name))
	}
	if err := spiffeid.ValidatePathSegment(name); err != nil {
		return fmt.Errorf("naming: node name %s: %w", Quote(name), err)
	}
	return nil
}

// ErrNamespaceMismatch is the error of a workload claiming a namespace
// other than the one in its SPIFFE ID.
var ErrNamespaceMismatch = errors.New("naming: namespace disagrees with the workload's identity")

// WorkloadNamespace is the namespace of a workload with identity id that
// claims namespace claimed (sigil-proxy run --namespace; "" for no
// claim): the ID's own when it has the form spiffe://td/ns/<ns>/sa/<sa>,
// which no claim can change (a different one is ErrNamespaceMismatch: a
// sidecar authenticated as a staging workload never routes or registers
// as prod); else the claim; else DefaultNamespace. A claim or an ID
// namespace that is not a DNS label is an error too.
func WorkloadNamespace(id spiffeid.ID, claimed string) (string, error) {
	if claimed != "" && !ValidNamespace(claimed) {
		return "", fmt.Errorf("naming: namespace %s %s", Quote(claimed), NamespaceRule)
	}
	ns, _, ok := NamespaceServiceAccount(id)
	switch {
	case !ok && claimed == "":
		return DefaultNamespace, nil
	case !ok:
		return claimed, nil
	case !ValidNamespace(ns):
		return "", fmt.Errorf("naming: %s: namespace %s %s", id, Quote(ns), NamespaceRule)
	case claimed != "" && claimed != ns:
		return "", fmt.Errorf("%w: %s is in namespace %s, not %s", ErrNamespaceMismatch, id, ns, claimed)
	}
	return ns, nil
}
