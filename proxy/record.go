package proxy

import (
	"net/http"
	"strconv"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/telemetry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Reporters, as Istio's reporter label: the caller's sidecar reports
// "source" (it knows the route and subset it chose), the callee's
// "destination" (it knows the caller's proven identity).
const (
	reporterSource      = "source"
	reporterDestination = "destination"
)

// Response flags, Envoy's short names (its access-log %RESPONSE_FLAGS%, as
// Istio's response_flags label carries them): why the sidecar itself
// answered or cut a request; "-" when it did not.
const (
	flagNone          = "-"
	flagNoRoute       = "NR"   // no route, or no service, for the request
	flagNoHealthy     = "UH"   // no healthy upstream endpoint
	flagOverflow      = "UO"   // the DestinationRule's connection pool was full
	flagTimeout       = "UT"   // the upstream did not answer in time
	flagUpstreamFail  = "UF"   // the upstream (peer sidecar or app) failed or was unreachable
	flagUpstreamReset = "UR"   // the upstream's response broke off mid-body; the caller's was reset
	flagFaultAbort    = "FI"   // fault injection aborted it
	flagFaultDelay    = "DI"   // fault injection delayed it
	flagUnauthorized  = "UAEX" // the policy denied it (Envoy's flag for an external authorizer's deny, as OPA-Envoy reports)
	flagBadRequest    = "DPE"  // the request broke HTTP or the sidecar's rules (downstream protocol error)
	flagDownstreamEnd = "DC"   // the caller's connection ended before the answer began (Envoy's downstream connection termination; response code 0)
	unknownLabelValue = "unknown"
)

// requestRecord is what the sidecar knows of one finished request or TCP
// connection: the fields of Istio's standard metrics. It is a comparable
// value, the key of the metrics' series cache (metrics.go); the Prometheus
// labels and the golden-metrics key are derived from it on a cache miss
// only. Every field comes from configuration, proven identities or a
// bounded set (status codes, flags), never from what a caller chose, so
// the series it keys stay bounded.
type requestRecord struct {
	reporter string
	// source and dest are SPIFFE IDs: the peer's as its certificate
	// proved it, the sidecar's own; "" when not known (an outbound
	// request that reached no peer).
	source, dest string
	// service is the mesh service of the destination, zero when there is
	// none; host is then the outside host a DestinationRule named, or
	// "unknown".
	service naming.Service
	host    string
	// subset and route are what the routing chose: the DestinationRule
	// subset and the VirtualService route's name ("" for none).
	subset, route string
	protocol      string
	code          int
	grpcStatus    string // "" when the response carried none
	flags         string
	// dryRunDenied: the dry-run Policy resource would have denied it.
	dryRunDenied bool
}

// routed is what the routing learned of a request on its way: the
// subset and route it chose, the peer it reached, and why the sidecar
// answered itself. The outbound statusRecorder carries it.
type routed struct {
	subset, route string
	peer          spiffeid.ID
	flags         string
}

// setFlag notes why the sidecar answered itself (the first reason wins).
func (r *routed) setFlag(f string) {
	if r.flags == "" {
		r.flags = f
	}
}

// grpcStatusOfResponse is the gRPC status a response carried, from its
// trailers or (trailers-only) its headers as written to w's header map:
// a trailer sent after the body is there under http.TrailerPrefix, or
// under its own name when it was announced. "" for none.
func grpcStatusOfResponse(h http.Header) string {
	if v := h["Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	if v := h[http.TrailerPrefix+"Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// failed says whether a request counts as a failure in golden metrics:
// a 5xx, a gRPC status other than OK (Linkerd's and Istio's success rate
// count the same way), or a response cut off before its end.
func (r *requestRecord) failed() bool {
	return r.code >= 500 || r.grpcStatus != "" && r.grpcStatus != "0" || r.flags == flagUpstreamReset
}

// observeAborted counts a request whose handler panicked: the response
// was cut off (http.ErrAbortHandler resets the caller's stream or
// connection), so it counts as reset. Its caller re-panics.
func (p *Proxy) observeAborted(w *statusRecorder, record func(*statusRecorder) requestRecord, r *http.Request, start time.Time) {
	w.flags = flagUpstreamReset
	p.observe(record(w), r, start, "")
}

// workloadOf splits a principal for the workload labels: a
// spiffe://td/ns/<ns>/sa/<sa> ID is workload <sa> in namespace <ns> (on
// plain hosts a service account names the workload); any other ID, or
// none, is "unknown".
func workloadOf(principal string) (workload, namespace string) {
	if principal == "" {
		return unknownLabelValue, unknownLabelValue
	}
	id, err := spiffeid.FromString(principal)
	if err != nil {
		return unknownLabelValue, unknownLabelValue
	}
	ns, sa, ok := naming.NamespaceServiceAccount(id)
	if !ok {
		return unknownLabelValue, unknownLabelValue
	}
	return sa, ns
}

func orUnknown(s string) string {
	if s == "" {
		return unknownLabelValue
	}
	return s
}

// requestLabels are the Prometheus label values of a request record, in
// the order of requestLabelNames; version is the destination_version
// (the chosen subset at the source, the sidecar's own version label at
// the destination), fqdn the destination service's host.
func (r *requestRecord) labels(version, fqdn string, tcp bool) []string {
	srcW, srcNS := workloadOf(r.source)
	dstW, dstNS := workloadOf(r.dest)
	name, ns := r.host, unknownLabelValue
	if !r.service.IsZero() {
		name, ns = r.service.Name, r.service.Namespace
	}
	policy := unknownLabelValue
	if r.reporter == reporterDestination {
		policy = "mutual_tls"
	}
	out := []string{r.reporter, srcW, srcNS, orUnknown(r.source), dstW, dstNS, orUnknown(r.dest),
		fqdn, name, ns, orUnknown(version), r.protocol, r.flags, policy}
	if tcp {
		return out
	}
	return append(out, strconv.Itoa(r.code), r.grpcStatus, r.route)
}

// tcpLabelNames are the labels of the TCP series, Istio's; requestLabelNames
// add the request's own, and Sigil's route_name.
var (
	tcpLabelNames = []string{"reporter", "source_workload", "source_workload_namespace", "source_principal",
		"destination_workload", "destination_workload_namespace", "destination_principal",
		"destination_service", "destination_service_name", "destination_service_namespace", "destination_version",
		"request_protocol", "response_flags", "connection_security_policy"}
	requestLabelNames = append(append([]string(nil), tcpLabelNames...), "response_code", "grpc_response_status", "route_name")
)

// statsKey is the golden-metrics key of a record: a destination that is
// no mesh service is named by its host, in no namespace.
func (r *requestRecord) statsKey() telemetry.Key {
	ns, svc := r.service.Namespace, r.service.Name
	if r.service.IsZero() {
		ns, svc = "", r.host
	}
	return telemetry.Key{Reporter: r.reporter, SourcePrincipal: r.source, DestinationPrincipal: r.dest,
		DestinationNamespace: ns, DestinationService: svc, DestinationSubset: r.subset, Route: r.route, Protocol: r.protocol}
}

// durationMillis is d in (fractional) milliseconds, the unit of Istio's
// request duration histogram.
func durationMillis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
