package traffic

import (
	"encoding/json"
	"fmt"
	"time"
)

// Kinds and API versions Sigil reads. Istio's networking.istio.io v1,
// v1beta1 and v1alpha3 share the fields below.
const (
	KindVirtualService  = "VirtualService"
	KindDestinationRule = "DestinationRule"
	GroupIstio          = "networking.istio.io"
)

var istioVersions = map[string]bool{"networking.istio.io/v1": true, "networking.istio.io/v1beta1": true, "networking.istio.io/v1alpha3": true}

// Metadata is the part of Kubernetes object metadata Sigil uses. Other
// metadata fields (labels, annotations, ...) are accepted and kept opaque,
// as kubectl users expect.
type Metadata struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Fields that tools add and that mean nothing here.
	ResourceVersion   string          `json:"resourceVersion,omitempty"`
	Generation        int64           `json:"generation,omitempty"`
	UID               string          `json:"uid,omitempty"`
	CreationTimestamp json.RawMessage `json:"creationTimestamp,omitempty"`
	// The rest of Kubernetes' ObjectMeta, kept opaque so that what
	// `kubectl get -o yaml`, Helm and Argo CD write applies unchanged.
	GenerateName               string          `json:"generateName,omitempty"`
	SelfLink                   string          `json:"selfLink,omitempty"`
	DeletionTimestamp          json.RawMessage `json:"deletionTimestamp,omitempty"`
	DeletionGracePeriodSeconds json.RawMessage `json:"deletionGracePeriodSeconds,omitempty"`
	OwnerReferences            json.RawMessage `json:"ownerReferences,omitempty"`
	Finalizers                 json.RawMessage `json:"finalizers,omitempty"`
	ManagedFields              json.RawMessage `json:"managedFields,omitempty"`
}

// VirtualService is Istio's networking.istio.io VirtualService, HTTP part.
type VirtualService struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   Metadata           `json:"metadata"`
	Spec       VirtualServiceSpec `json:"spec"`
	// Status is what a controller wrote; accepted and ignored (Sigil
	// keeps the spec only).
	Status json.RawMessage `json:"status,omitempty"`
}

// VirtualServiceSpec: hosts, where the routes apply (gateways, exportTo),
// and HTTP, tcp and tls routes.
type VirtualServiceSpec struct {
	Hosts []string    `json:"hosts"`
	HTTP  []HTTPRoute `json:"http"`
	// ExportTo lists the namespaces whose sidecars the VirtualService
	// applies to: "." its own, "*" all (the default when empty), or
	// namespace names (Resource.Visible).
	ExportTo []string `json:"exportTo,omitempty"`
	// TCP routes opaque TCP connections (tcproute.go).
	TCP []TCPRoute `json:"tcp,omitempty"`
	// TLS routes TLS connections by SNI without terminating them
	// (tlsroute.go).
	TLS []TLSRoute `json:"tls,omitempty"`
	// Gateways names where the routes apply, as Istio's gateways:
	// MeshGateway ("mesh") for every sidecar, any other name
	// ("[namespace/]name") an ingress or egress gateway, which Sigil does
	// not have. Absent: the sidecars only (AppliesToMesh).
	Gateways []string `json:"gateways,omitempty"`
}

// HTTPRoute is one rule: the first whose match applies routes the request.
type HTTPRoute struct {
	Name             string                 `json:"name,omitempty"`
	Match            []HTTPMatchRequest     `json:"match,omitempty"`
	Route            []HTTPRouteDestination `json:"route,omitempty"`
	Redirect         *HTTPRedirect          `json:"redirect,omitempty"`
	Rewrite          *HTTPRewrite           `json:"rewrite,omitempty"`
	Timeout          *Duration              `json:"timeout,omitempty"`
	Retries          *HTTPRetry             `json:"retries,omitempty"`
	Fault            *HTTPFaultInjection    `json:"fault,omitempty"`
	Mirror           *Destination           `json:"mirror,omitempty"`
	MirrorPercentage *Percent               `json:"mirrorPercentage,omitempty"`
	Headers          *Headers               `json:"headers,omitempty"`
	// MirrorPercent is Istio's deprecated integer percentage (also
	// spelled mirror_percent); the parser moves it to MirrorPercentage
	// when that is unset, as Istio does.
	MirrorPercent *uint32 `json:"mirrorPercent,omitempty"`
	// DirectResponse, when set, answers the request at the sidecar
	// (directresponse.go).
	DirectResponse *HTTPDirectResponse `json:"directResponse,omitempty"`
	// CorsPolicy, when set, has the calling sidecar answer CORS preflights
	// and mark allowed origins' responses (cors.go).
	CorsPolicy *CorsPolicy `json:"corsPolicy,omitempty"`
	// Delegate hands the route's matches to the http routes of a delegate
	// VirtualService, which take its place (delegate.go).
	Delegate *Delegate `json:"delegate,omitempty"`
}

// HTTPMatchRequest: all of its conditions must hold.
type HTTPMatchRequest struct {
	Name          string                 `json:"name,omitempty"`
	URI           *StringMatch           `json:"uri,omitempty"`
	Method        *StringMatch           `json:"method,omitempty"`
	Authority     *StringMatch           `json:"authority,omitempty"`
	Headers       map[string]StringMatch `json:"headers,omitempty"`
	QueryParams   map[string]StringMatch `json:"queryParams,omitempty"`
	SourceLabels  map[string]string      `json:"sourceLabels,omitempty"`
	IgnoreURICase bool                   `json:"ignoreUriCase,omitempty"`
	// Port is the port the request is for (the port the app addressed);
	// 0: any.
	Port uint32 `json:"port,omitempty"`
	// Gateways, when set, replaces the VirtualService's gateways for this
	// match: it applies at sidecars only if it names MeshGateway.
	Gateways []string `json:"gateways,omitempty"`
}

// StringMatch is exactly one of exact, prefix or regex (RE2).
type StringMatch struct {
	Exact  *string `json:"exact,omitempty"`
	Prefix *string `json:"prefix,omitempty"`
	Regex  *string `json:"regex,omitempty"`
}

// HTTPRouteDestination is a weighted destination.
type HTTPRouteDestination struct {
	Destination Destination `json:"destination"`
	Weight      *int32      `json:"weight,omitempty"`
	Headers     *Headers    `json:"headers,omitempty"`
}

// Destination names a service, a subset of it and optionally a port.
type Destination struct {
	Host   string        `json:"host"`
	Subset string        `json:"subset,omitempty"`
	Port   *PortSelector `json:"port,omitempty"`
}

// PortSelector selects a service port.
type PortSelector struct {
	Number uint32 `json:"number"`
}

// HTTPRedirect answers with a redirect instead of forwarding. Port and
// DerivePort are Istio's oneof: at most one is set. See
// Matched.RedirectLocation for how each field applies.
type HTTPRedirect struct {
	URI          string `json:"uri,omitempty"`
	Authority    string `json:"authority,omitempty"`
	Port         uint32 `json:"port,omitempty"`
	DerivePort   string `json:"derivePort,omitempty"`
	Scheme       string `json:"scheme,omitempty"`
	RedirectCode uint32 `json:"redirectCode,omitempty"`
}

// HTTPRewrite rewrites the path prefix that matched (URI) or the path by
// a regex (URIRegexRewrite; at most one of the two), and the authority.
type HTTPRewrite struct {
	URI             string        `json:"uri,omitempty"`
	URIRegexRewrite *RegexRewrite `json:"uriRegexRewrite,omitempty"`
	Authority       string        `json:"authority,omitempty"`
}

// RegexRewrite is Istio's uriRegexRewrite (Envoy's regex_rewrite): every
// match of Match (RE2) in the path is replaced by Rewrite, in which \1 to
// \9 name Match's groups.
type RegexRewrite struct {
	Match   string `json:"match"`
	Rewrite string `json:"rewrite"`
}

// HTTPRetry is the retry policy.
type HTTPRetry struct {
	Attempts      int32     `json:"attempts"`
	PerTryTimeout *Duration `json:"perTryTimeout,omitempty"`
	RetryOn       string    `json:"retryOn,omitempty"`
}

// HTTPFaultInjection delays or aborts requests.
type HTTPFaultInjection struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay delays a percentage of requests.
type FaultDelay struct {
	FixedDelay *Duration `json:"fixedDelay"`
	Percentage *Percent  `json:"percentage,omitempty"`
	// Percent is Istio's deprecated integer percentage; the parser moves
	// it to Percentage when that is unset, as Istio does.
	Percent *int32 `json:"percent,omitempty"`
}

// FaultAbort fails a percentage of requests with an HTTP or gRPC status.
type FaultAbort struct {
	HTTPStatus int32    `json:"httpStatus,omitempty"`
	GRPCStatus string   `json:"grpcStatus,omitempty"`
	Percentage *Percent `json:"percentage,omitempty"`
}

// Percent is Istio's {value: 12.5}.
type Percent struct {
	Value float64 `json:"value"`
}

// Headers manipulates request and response headers.
type Headers struct {
	Request  *HeaderOperations `json:"request,omitempty"`
	Response *HeaderOperations `json:"response,omitempty"`
}

// HeaderOperations sets, adds and removes headers.
type HeaderOperations struct {
	Set    map[string]string `json:"set,omitempty"`
	Add    map[string]string `json:"add,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// DestinationRule is Istio's networking.istio.io DestinationRule.
type DestinationRule struct {
	APIVersion string              `json:"apiVersion"`
	Kind       string              `json:"kind"`
	Metadata   Metadata            `json:"metadata"`
	Spec       DestinationRuleSpec `json:"spec"`
	// Status is what a controller wrote; accepted and ignored (Sigil
	// keeps the spec only).
	Status json.RawMessage `json:"status,omitempty"`
}

// DestinationRuleSpec: policies for a host and its subsets.
type DestinationRuleSpec struct {
	Host          string         `json:"host"`
	TrafficPolicy *TrafficPolicy `json:"trafficPolicy,omitempty"`
	Subsets       []Subset       `json:"subsets,omitempty"`
	// ExportTo is as VirtualServiceSpec.ExportTo.
	ExportTo []string `json:"exportTo,omitempty"`
	// WorkloadSelector, when set, limits the rule to the sidecars of its
	// own namespace whose labels match (selector.go).
	WorkloadSelector *WorkloadSelector `json:"workloadSelector,omitempty"`
}

// Subset is a named group of a service's endpoints, by label.
type Subset struct {
	Name          string            `json:"name"`
	Labels        map[string]string `json:"labels,omitempty"`
	TrafficPolicy *TrafficPolicy    `json:"trafficPolicy,omitempty"`
}

// TrafficPolicy: load balancing, connection pool, outlier detection.
type TrafficPolicy struct {
	LoadBalancer     *LoadBalancer     `json:"loadBalancer,omitempty"`
	ConnectionPool   *ConnectionPool   `json:"connectionPool,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	// TLS is how the sidecar speaks to the destination (tlsmode.go).
	TLS *ClientTLSSettings `json:"tls,omitempty"`
	// PortLevelSettings override the policy above, field by field, for
	// requests to one port of the destination (Istio's portLevelSettings).
	PortLevelSettings []PortTrafficPolicy `json:"portLevelSettings,omitempty"`
}

// PortTrafficPolicy is the policy for one port of a destination: what it
// sets replaces the enclosing TrafficPolicy's field of the same name.
type PortTrafficPolicy struct {
	Port             *PortSelector     `json:"port"`
	LoadBalancer     *LoadBalancer     `json:"loadBalancer,omitempty"`
	ConnectionPool   *ConnectionPool   `json:"connectionPool,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	// TLS is how the sidecar speaks to that port (tlsmode.go).
	TLS *ClientTLSSettings `json:"tls,omitempty"`
}

// LoadBalancer picks the algorithm: one of simple and consistentHash.
type LoadBalancer struct {
	Simple string `json:"simple,omitempty"`
	// ConsistentHash sends requests with the same key to the same
	// endpoint (session affinity; Istio's consistentHash).
	ConsistentHash *ConsistentHash `json:"consistentHash,omitempty"`
	// Warmup ramps a newly added endpoint's share of requests up over a
	// time window (Istio's WarmupConfiguration, Envoy's slow start;
	// proxy/upstream/warmup.go).
	Warmup *Warmup `json:"warmup,omitempty"`
	// WarmupDurationSecs is Istio's older form of Warmup: the window only,
	// with the defaults of the other two fields. At most one of the two.
	WarmupDurationSecs *Duration `json:"warmupDurationSecs,omitempty"`
}

// ConsistentHash names the request's key, exactly one of: a header, a
// cookie, the source IP, a query parameter. RingHash, Maglev and
// MinimumRingSize (deprecated) size Envoy's hash tables; Sigil hashes by
// rendezvous (highest random weight), which has no table, so they are
// checked and have nothing to tune.
type ConsistentHash struct {
	HTTPHeaderName         string      `json:"httpHeaderName,omitempty"`
	HTTPCookie             *HTTPCookie `json:"httpCookie,omitempty"`
	UseSourceIP            bool        `json:"useSourceIp,omitempty"`
	HTTPQueryParameterName string      `json:"httpQueryParameterName,omitempty"`
	RingHash               *RingHash   `json:"ringHash,omitempty"`
	Maglev                 *Maglev     `json:"maglev,omitempty"`
	MinimumRingSize        uint64      `json:"minimumRingSize,omitempty"`
}

// HTTPCookie is the cookie whose value is the key. A request without it
// gets one generated, set on the response, when Ttl is given (0: a
// session cookie); without Ttl none is generated (Envoy's rule).
type HTTPCookie struct {
	Name string    `json:"name"`
	Path string    `json:"path,omitempty"`
	TTL  *Duration `json:"ttl,omitempty"`
}

// RingHash is Envoy's ring hash table size (entries).
type RingHash struct {
	MinimumRingSize uint64 `json:"minimumRingSize,omitempty"`
}

// Maglev is Envoy's Maglev table size (entries, a prime).
type Maglev struct {
	TableSize uint64 `json:"tableSize,omitempty"`
}

// ConnectionPool limits what one sidecar sends to a destination.
type ConnectionPool struct {
	TCP  *TCPSettings  `json:"tcp,omitempty"`
	HTTP *HTTPSettings `json:"http,omitempty"`
}

// TCPSettings of the connection pool.
type TCPSettings struct {
	MaxConnections int32     `json:"maxConnections,omitempty"`
	ConnectTimeout *Duration `json:"connectTimeout,omitempty"`
	// TCPKeepalive turns on TCP keepalive probes on the sidecar's
	// connections to the destination's sidecars (Istio's tcpKeepalive).
	TCPKeepalive *TCPKeepalive `json:"tcpKeepalive,omitempty"`
}

// TCPKeepalive is SO_KEEPALIVE with its three knobs (Istio's
// ConnectionPoolSettings.TCPSettings.TcpKeepalive); an unset one takes Go's
// default (net.KeepAliveConfig: 15s idle, 15s interval, 9 probes).
type TCPKeepalive struct {
	// Probes is how many unanswered probes close the connection (≥ 1).
	Probes *int32 `json:"probes,omitempty"`
	// Time is how long the connection sits idle before the first probe.
	Time *Duration `json:"time,omitempty"`
	// Interval is the time between probes.
	Interval *Duration `json:"interval,omitempty"`
}

// HTTPSettings of the connection pool.
type HTTPSettings struct {
	HTTP1MaxPendingRequests  int32 `json:"http1MaxPendingRequests,omitempty"`
	HTTP2MaxRequests         int32 `json:"http2MaxRequests,omitempty"`
	MaxRequestsPerConnection int32 `json:"maxRequestsPerConnection,omitempty"`
	MaxRetries               int32 `json:"maxRetries,omitempty"`
	// HTTP2KeepAlive health-checks the sidecar's HTTP/2 connections to the
	// destination's sidecars with PINGs (Istio's http2KeepAlive).
	HTTP2KeepAlive *HTTP2KeepAlive `json:"http2KeepAlive,omitempty"`
	// H2UpgradePolicy is Istio's h2UpgradePolicy: UPGRADE carries the
	// app's HTTP/1.1 requests to the destination's sidecars over the
	// sidecars' HTTP/2 connection (the far sidecar speaks HTTP/1.1 to its
	// app again); DEFAULT and DO_NOT_UPGRADE keep HTTP/1.1 between the
	// sidecars, which is what Sigil does by default.
	H2UpgradePolicy string `json:"h2UpgradePolicy,omitempty"`
}

// Istio's h2UpgradePolicy values.
const (
	H2UpgradeDefault      = "DEFAULT"
	H2UpgradeDoNotUpgrade = "DO_NOT_UPGRADE"
	H2UpgradeUpgrade      = "UPGRADE"
)

// HTTP2KeepAlive is Envoy's connection_keepalive: an unset field takes
// Sigil's default (PING after 30s without a frame, 15s for its answer).
type HTTP2KeepAlive struct {
	// Interval is how long a connection may go without a frame received
	// before a PING is sent.
	Interval *Duration `json:"interval,omitempty"`
	// Timeout is how long the PING's answer may take before the
	// connection is closed.
	Timeout *Duration `json:"timeout,omitempty"`
}

// OutlierDetection ejects endpoints that keep failing.
type OutlierDetection struct {
	Consecutive5xxErrors     *int32    `json:"consecutive5xxErrors,omitempty"`
	ConsecutiveGatewayErrors *int32    `json:"consecutiveGatewayErrors,omitempty"`
	Interval                 *Duration `json:"interval,omitempty"`
	BaseEjectionTime         *Duration `json:"baseEjectionTime,omitempty"`
	MaxEjectionPercent       *int32    `json:"maxEjectionPercent,omitempty"`
}

// Duration reads Istio's duration strings ("1s", "200ms", "1.5s").
type Duration struct{ time.Duration }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("traffic: duration must be a string such as \"1s\" or \"200ms\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("traffic: duration %q: %v", s, err)
	}
	d.Duration = v
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Duration.String()) }
