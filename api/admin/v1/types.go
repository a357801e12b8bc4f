// Package adminv1 is sigil-server's admin API as its clients see it: the
// JSON sent to and from the admin socket (HTTP on a Unix socket in the
// server's data dir, owner only), the API's one error type, and the client
// that `sigil` and `sigil-server`'s admin subcommands use.
//
// The types here are wire types, not the server's: the server converts its
// store's records to them, so a client links none of the CA, the SQLite
// store or the key manager. Their JSON field names are the API: a field is
// added, never renamed.
//
//	c := adminv1.NewAdminClient(adminv1.AdminSocket("/var/lib/sigil"))
//	entries, err := c.ListEntries(ctx, "")
package adminv1

import (
	"encoding/json"
	"path/filepath"
	"time"
)

// AdminSocket is the admin API's socket in a server's data dir.
func AdminSocket(dataDir string) string { return filepath.Join(dataDir, "admin.sock") }

// Limits the server enforces on admin requests, which a client keeps to.
const (
	// MaxTokenTTL is the longest life of a join token.
	MaxTokenTTL = 24 * time.Hour
	// MaxSVIDTTL is the longest SVID life an entry may ask for.
	MaxSVIDTTL = 30 * 24 * time.Hour
	// MaxDeleteBatch bounds the resources of one delete request; `sigil
	// delete -f` sends larger sets in several.
	MaxDeleteBatch = 10000
)

// TokenRequest asks for a join token for Node, valid for TTL (above 0, at
// most MaxTokenTTL).
type TokenRequest struct {
	Node string        `json:"node"`
	TTL  time.Duration `json:"ttl"`
}

// TokenResponse carries a new join token and the agent ID it attests as.
type TokenResponse struct {
	Token     string    `json:"token"`
	Node      string    `json:"node"`
	AgentID   string    `json:"agent_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// EntryRequest asks for a registration entry. A TTL of 0 takes the
// server's default.
type EntryRequest struct {
	// ID is the entry's ID (SPIRE's -entryID): 1 to 64 of A-Z a-z 0-9 . _ -;
	// "" for a random one. Server replicas that each keep their own
	// registry (Kubernetes HA) need the same hand-made entry under the
	// same ID, since agents ask for SVIDs by entry ID.
	ID        string        `json:"id,omitempty"`
	SPIFFEID  string        `json:"spiffe_id"`
	ParentID  string        `json:"parent_id"`
	Selectors []string      `json:"selectors"`
	X509TTL   time.Duration `json:"x509_ttl"`
	JWTTTL    time.Duration `json:"jwt_ttl"`
	// Services whose endpoints sidecars of this identity may register:
	// NAME (in the identity's own namespace) or NAME.NAMESPACE.
	Services []string `json:"services,omitempty"`
}

// Entry grants SPIFFEID to the workloads with all of Selectors on the node
// whose agent is ParentID.
type Entry struct {
	ID        string        `json:"id"`
	SPIFFEID  string        `json:"spiffe_id"`
	ParentID  string        `json:"parent_id"`
	Selectors []Selector    `json:"selectors"`
	X509TTL   time.Duration `json:"x509_ttl"`
	// Services are the services whose endpoints a sidecar with this
	// identity may register. Empty: the service named by the ID's service
	// account (spiffe://td/ns/<ns>/sa/<service>), as in Kubernetes.
	Services  []string      `json:"services,omitempty"`
	JWTTTL    time.Duration `json:"jwt_ttl"`
	Source    string        `json:"source"`
	Revision  int64         `json:"revision"`
	CreatedAt time.Time     `json:"created_at"`
}

// Selector is one selector of an entry, such as type "unix" and value
// "uid:1000" (SPIRE's type:value form).
type Selector struct {
	Type  string
	Value string
}

// String returns the "type:value" form.
func (s Selector) String() string { return s.Type + ":" + s.Value }

// Agent states in AgentStatus.State.
const (
	// AgentActive: the agent's newest SVID is still valid.
	AgentActive = "active"
	// AgentExpired: its newest SVID has expired; the agent cannot renew it
	// and must re-attest with a new join token (README: runbook).
	AgentExpired = "expired"
)

// Agent is an attested node agent. Its fields go on the wire by their Go
// names, as they always have.
type Agent struct {
	SPIFFEID   string
	Attestor   string
	Node       string
	Serial     string // serial of the agent's current SVID, hex
	ExpiresAt  time.Time
	AttestedAt time.Time
}

// AgentStatus is an attested agent as GET /v1/agents lists it: the
// record, whether its SVID is still valid, and when the server last heard
// from it.
type AgentStatus struct {
	Agent
	State string `json:"state"`
	// LastSeen is the agent's last authenticated call to this server
	// process (nil if none since it started).
	LastSeen *time.Time `json:"last_seen,omitempty"`
}

// File is one file given to `sigil apply -f`.
type File struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// ApplyRequest carries files of configuration resources.
type ApplyRequest struct {
	Files  []File `json:"files"`
	DryRun bool   `json:"dry_run"`
}

// Outcomes in Result.Action, as kubectl prints them.
const (
	Created    = "created"
	Configured = "configured"
	Unchanged  = "unchanged"
	Deleted    = "deleted"
)

// Result is what happened to one resource.
type Result struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Action    string `json:"action"`
}

// ApplyResult is one resource's outcome, with a diff on a dry run.
type ApplyResult struct {
	Result
	Diff string `json:"diff,omitempty"`
}

// ApplyResponse says what happened (or, on a dry run, would happen).
type ApplyResponse struct {
	Results []ApplyResult `json:"results"`
	Version int64         `json:"version"`
	DryRun  bool          `json:"dry_run"`
	// Warnings are about what was applied and accepted but will not work
	// as written yet (a route to a subset no DestinationRule defines);
	// `sigil apply` prints each as "warning: ...".
	Warnings []string `json:"warnings,omitempty"`
}

// ResourceKey names a configuration resource.
type ResourceKey struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// DeleteRequest names the resources to delete, in one transaction (at most
// MaxDeleteBatch).
type DeleteRequest struct {
	Resources []ResourceKey `json:"resources"`
}

// DeleteResponse says what was deleted, and which named resources did not
// exist (kubectl's NotFound; the others are still deleted).
type DeleteResponse struct {
	Results  []Result `json:"results"`
	NotFound []string `json:"not_found,omitempty"`
	Version  int64    `json:"version"`
	// Warnings are about what stays and will not work as written (a
	// route left pointing at a subset whose DestinationRule went);
	// `sigil delete` prints each as "warning: ...".
	Warnings []string `json:"warnings,omitempty"`
}

// Resource is a stored configuration resource: its spec is the JSON the
// server validated before it stored it.
type Resource struct {
	Kind      string          `json:"kind"`
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	Spec      json.RawMessage `json:"spec"`
	// Version is the config version at which it last changed.
	Version   int64     `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	// Origin is where it came from: absent for sigil apply, or
	// "kubernetes/" and the Kubernetes object it mirrors.
	Origin string `json:"origin,omitempty"`
	// MeshWide marks a Policy in the server's root namespace, which
	// applies to every sidecar no Policy of its own namespace selects
	// (sigil-system; on Kubernetes --k8s-namespace).
	MeshWide bool `json:"mesh_wide,omitempty"`
}

// Proxy is a sidecar as its agent last reported it.
type Proxy struct {
	AgentID       string            `json:"agent_id"`
	ProxyID       string            `json:"proxy_id"`
	SPIFFEID      string            `json:"spiffe_id"`
	Service       string            `json:"service"`
	Address       string            `json:"address"`
	Labels        map[string]string `json:"labels"`
	ConfigVersion int64             `json:"config_version"`
	ReportedAt    time.Time         `json:"reported_at"`
	// Namespace is the namespace of its service.
	Namespace string `json:"namespace"`
}

// ProxyStatus is a sidecar with whether it runs the current config.
type ProxyStatus struct {
	Proxy
	CurrentVersion int64 `json:"current_version"`
	Stale          bool  `json:"stale"`
}

// ServiceInfo summarizes a service's endpoints.
type ServiceInfo struct {
	Name       string              `json:"name"`
	Endpoints  int                 `json:"endpoints"`
	Identities []string            `json:"identities"`
	Labels     []map[string]string `json:"labels"`
	// Namespace is the service's namespace: reviews in prod and reviews
	// in staging are two services.
	Namespace string `json:"namespace"`
}
