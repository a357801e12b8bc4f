package adminv1

import "time"

// Stat kinds: what one row of golden metrics is about.
const (
	// StatService rows are per destination service (all its subsets).
	StatService = "service"
	// StatSubset rows are per destination service and subset (canaries:
	// v1 and v2 side by side).
	StatSubset = "subset"
	// StatWorkload rows are per workload identity (SPIFFE ID), for the
	// traffic it received.
	StatWorkload = "workload"
	// StatRoute rows are per VirtualService route name of a service.
	StatRoute = "route"
)

// StatQuery selects golden-metric rows from the server's window, sent as
// the query string of GET /v1/stats (kind, namespace, name, window).
type StatQuery struct {
	// Kind is one of StatService, StatSubset, StatWorkload, StatRoute;
	// empty means StatService.
	Kind string `json:"kind,omitempty"`
	// Namespace keeps rows of one namespace; empty: all namespaces.
	Namespace string `json:"namespace,omitempty"`
	// Name keeps rows of one service (or, for StatWorkload, one SPIFFE
	// ID); empty: all.
	Name string `json:"name,omitempty"`
	// Window is how far back the figures reach, a multiple of the
	// server's 10-second resolution; 0 means one minute; at most the
	// window the server keeps (15 minutes).
	Window time.Duration `json:"window,omitempty"`
}

// Golden is the golden metrics of one row over a query's window, merged
// from what every sidecar reported (latency percentiles come from merged
// histograms, never from averaged percentiles).
type Golden struct {
	// Requests is the number of HTTP and gRPC requests completed in the
	// window; Failures those answered 5xx (or a gRPC status other than
	// OK for gRPC), or never answered.
	Requests uint64 `json:"requests"`
	Failures uint64 `json:"failures"`
	// SuccessRate is (Requests-Failures)/Requests in [0, 1]; nil when no
	// request completed in the window.
	SuccessRate *float64 `json:"success_rate,omitempty"`
	// RPS is Requests divided by the window's length in seconds.
	RPS float64 `json:"rps"`
	// P50, P95 and P99 are latency percentiles in milliseconds (Istio's
	// request duration: from the request's arrival at the sidecar to the
	// end of the response), each the upper bound of the histogram bucket
	// it falls in (at most 15 % above); nil when no request completed.
	P50 *float64 `json:"p50_ms,omitempty"`
	P95 *float64 `json:"p95_ms,omitempty"`
	P99 *float64 `json:"p99_ms,omitempty"`
	// TCPConnections counts opaque TCP connections opened in the window;
	// BytesSent and BytesReceived the bytes they carried, from the
	// destination's point of view.
	TCPConnections uint64 `json:"tcp_connections"`
	BytesSent      uint64 `json:"bytes_sent"`
	BytesReceived  uint64 `json:"bytes_received"`
	// DryRunDenied counts the requests and TCP connections of the window
	// that the dry-run Policy resource would have denied (the enforced
	// policy decided them): what enforcing it would block.
	DryRunDenied uint64 `json:"dryrun_denied"`
}

// StatRow is one row of `sigil stat` and of the dashboard's tables.
type StatRow struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	// Name is the service's short name (StatService, StatSubset,
	// StatRoute) or the workload's SPIFFE ID (StatWorkload).
	Name string `json:"name"`
	// Subset is set on StatSubset rows ("" for traffic no subset named).
	Subset string `json:"subset,omitempty"`
	// Route is set on StatRoute rows: the VirtualService route's name,
	// or "" for traffic no named route matched.
	Route string `json:"route,omitempty"`
	// Meshed is the number of sidecars that reported for this row's
	// destination within the window.
	Meshed int `json:"meshed"`
	Golden
}

// StatResponse is the answer to GET /v1/stats.
type StatResponse struct {
	// Window is the query's window as applied; Resolution the width of
	// one stored interval (10 s). Both are integer nanoseconds in JSON
	// (60000000000 is 1m), as Go encodes a time.Duration.
	Window     time.Duration `json:"window"`
	Resolution time.Duration `json:"resolution"`
	// End is when the window ends: the end of its last complete
	// interval. The figures cover [End-Window, End), as agents reported
	// them (a request is reported up to two reporting intervals after it
	// completed).
	End  time.Time `json:"end"`
	Rows []StatRow `json:"rows"`
	// Overflow counts the requests and TCP connections of the window that
	// sidecars or agents counted in no series because they held their
	// cap of keys: the rows' figures are short by up to this many.
	Overflow uint64 `json:"overflow,omitempty"`
}

// Edge is observed traffic from one identity to one destination service,
// as the answer to GET /v1/edges and `sigil edges` show it.
type Edge struct {
	// Source is the SPIFFE ID the calling sidecar proved in its mTLS
	// handshake, as the destination's sidecar saw it.
	Source string `json:"source"`
	// DestinationNamespace and DestinationService name the service.
	DestinationNamespace string `json:"destination_namespace"`
	DestinationService   string `json:"destination_service"`
	// Destination is the SPIFFE ID the destination's sidecar presented.
	Destination string `json:"destination"`
	Golden
}

// EdgesResponse is the answer to GET /v1/edges (query string: namespace,
// window, as StatQuery).
type EdgesResponse struct {
	Window time.Duration `json:"window"`
	// End is when the window ends, as StatResponse.End.
	End   time.Time `json:"end"`
	Edges []Edge    `json:"edges"`
}

// Denial is one request a sidecar's authorization policy denied, as the
// answer to GET /v1/denials and the dashboard show it. Never carries
// headers or bodies.
type Denial struct {
	Time time.Time `json:"time"`
	// Source is the caller's proven SPIFFE ID; Destination the denying
	// sidecar's.
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// Namespace and Service name the destination service.
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	Method    string `json:"method"`
	// Path is the normalized path the policy saw, without the query.
	Path string `json:"path"`
	// DecisionID is the decision log's id of this decision.
	DecisionID string `json:"decision_id"`
}

// DenialsResponse is the answer to GET /v1/denials (query string:
// namespace, limit): the most recent denials first.
type DenialsResponse struct {
	Denials []Denial `json:"denials"`
}
