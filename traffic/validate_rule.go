package traffic

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/sigil-mesh/sigil/naming"
	"golang.org/x/net/http/httpguts"
)

// Load balancer names.
var lbNames = map[string]bool{"": true, "UNSPECIFIED": true, "ROUND_ROBIN": true, "LEAST_REQUEST": true, "LEAST_CONN": true, "RANDOM": true}

func (v *validator) destinationRule(dr *DestinationRule, namespace string) {
	v.policyTLS(dr, v.ruleHost(dr), namespace)
	v.exportTo(dr.Spec.ExportTo)
	v.trafficPolicy("spec.trafficPolicy", dr.Spec.TrafficPolicy)
	seen := map[string]bool{}
	for i, s := range dr.Spec.Subsets {
		p := fmt.Sprintf("spec.subsets[%d]", i)
		if !naming.ValidServiceName(s.Name) {
			v.fail(p+".name", "%q is not a valid subset name", s.Name)
		}
		if seen[s.Name] {
			v.fail(p+".name", "%q repeats an earlier subset", s.Name)
		}
		seen[s.Name] = true
		v.labels(p+".labels", s.Labels)
		v.trafficPolicy(p+".trafficPolicy", s.TrafficPolicy)
	}
}

func (v *validator) trafficPolicy(p string, tp *TrafficPolicy) {
	if tp == nil {
		return
	}
	if reflect.ValueOf(*tp).IsZero() {
		v.fail(p, "is empty: set at least one of its fields, or remove it")
		return
	}
	if lb := tp.LoadBalancer; lb != nil && !lbNames[lb.Simple] {
		v.fail(p+".loadBalancer.simple", "%q: want ROUND_ROBIN, LEAST_REQUEST or RANDOM", lb.Simple)
	}
	if lb := tp.LoadBalancer; lb != nil && lb.ConsistentHash != nil {
		v.consistentHash(p+".loadBalancer", lb)
	}
	if lb := tp.LoadBalancer; lb != nil {
		v.warmup(p+".loadBalancer", lb)
	}
	if cp := tp.ConnectionPool; cp != nil {
		if cp.TCP == nil && cp.HTTP == nil {
			v.fail(p+".connectionPool", "is empty: set tcp or http, or remove it")
		}
		if cp.TCP != nil {
			v.nonNegative(p+".connectionPool.tcp.maxConnections", cp.TCP.MaxConnections)
			v.duration(p+".connectionPool.tcp.connectTimeout", cp.TCP.ConnectTimeout)
			if ka := cp.TCP.TCPKeepalive; ka != nil {
				v.duration(p+".connectionPool.tcp.tcpKeepalive.time", ka.Time)
				v.duration(p+".connectionPool.tcp.tcpKeepalive.interval", ka.Interval)
				if ka.Probes != nil && *ka.Probes < 1 {
					v.fail(p+".connectionPool.tcp.tcpKeepalive.probes", "%d: must be at least 1", *ka.Probes)
				}
			}
		}
		if h := cp.HTTP; h != nil {
			v.nonNegative(p+".connectionPool.http.http1MaxPendingRequests", h.HTTP1MaxPendingRequests)
			v.nonNegative(p+".connectionPool.http.http2MaxRequests", h.HTTP2MaxRequests)
			v.nonNegative(p+".connectionPool.http.maxRequestsPerConnection", h.MaxRequestsPerConnection)
			v.nonNegative(p+".connectionPool.http.maxRetries", h.MaxRetries)
			if ka := h.HTTP2KeepAlive; ka != nil {
				v.duration(p+".connectionPool.http.http2KeepAlive.interval", ka.Interval)
				v.duration(p+".connectionPool.http.http2KeepAlive.timeout", ka.Timeout)
			}
			switch h.H2UpgradePolicy {
			case "", H2UpgradeDefault, H2UpgradeDoNotUpgrade, H2UpgradeUpgrade:
			default:
				v.fail(p+".connectionPool.http.h2UpgradePolicy", "%q: want DEFAULT, DO_NOT_UPGRADE or UPGRADE", h.H2UpgradePolicy)
			}
		}
	}
	if od := tp.OutlierDetection; od != nil {
		for name, n := range map[string]*int32{"consecutive5xxErrors": od.Consecutive5xxErrors, "consecutiveGatewayErrors": od.ConsecutiveGatewayErrors} {
			if n != nil {
				v.nonNegative(p+".outlierDetection."+name, *n)
			}
		}
		v.duration(p+".outlierDetection.interval", od.Interval)
		v.duration(p+".outlierDetection.baseEjectionTime", od.BaseEjectionTime)
		if m := od.MaxEjectionPercent; m != nil && (*m < 0 || *m > 100) {
			v.fail(p+".outlierDetection.maxEjectionPercent", "%d is not between 0 and 100", *m)
		}
	}
	v.portLevelSettings(p, tp)
}

func (v *validator) nonNegative(p string, n int32) {
	if n < 0 {
		v.fail(p, "%d must not be negative", n)
	}
}

// GRPCCodes maps gRPC status names, as retryOn and abort.grpcStatus use
// them, to codes.
var GRPCCodes = map[string]int{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
	"ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
	"ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
	"DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

// CheckReferences checks what one resource cannot check alone: no host
// has two DestinationRules that could apply to one sidecar (hosts are
// told apart by namespace: reviews.prod and reviews.staging are two).
// A host may have one rule without a workloadSelector and rules with
// selectors (the selecting rule wins for the workloads it selects, as in
// Istio), as long as no two selectors could select one workload. Istio
// merges clashing rules when their subsets and policies do not clash and
// otherwise keeps the oldest; Sigil refuses the later one, so that what
// is in force never depends on the order of creation.
func CheckReferences(all []Resource) error {
	owner := map[string]string{}
	type selecting struct {
		ref, namespace string
		sel            *WorkloadSelector
	}
	selected := map[string][]selecting{}
	var errs []error
	for _, r := range all {
		if r.DR == nil {
			continue
		}
		key, _, ok := HostKey(r.DR.Spec.Host, r.Namespace)
		if !ok {
			continue // Validate refused it
		}
		if sel := r.DR.Spec.WorkloadSelector; sel != nil {
			clash := false
			for _, prev := range selected[key] {
				if prev.namespace == r.Namespace && prev.sel.overlaps(sel) {
					errs = append(errs, fmt.Errorf("traffic: %s: spec.host %q (%s): spec.workloadSelector may select the same workloads as %s's", r.Ref(), r.DR.Spec.Host, HostOfKey(key), prev.ref))
					clash = true
					break
				}
			}
			if !clash {
				selected[key] = append(selected[key], selecting{r.Ref(), r.Namespace, sel})
			}
			continue
		}
		if prev, dup := owner[key]; dup {
			errs = append(errs, fmt.Errorf("traffic: %s: spec.host %q (%s) already has %s", r.Ref(), r.DR.Spec.Host, HostOfKey(key), prev))
			continue
		}
		owner[key] = r.Ref()
	}
	errs = append(errs, checkPolicyScopes(all)...)
	return errors.Join(errs...)
}

// UndefinedSubset is a route or mirror to a subset that no
// DestinationRule for its host defines, or none that applies where the
// route does (Hidden).
type UndefinedSubset struct {
	Source string // the VirtualService, as Resource.Ref names it
	Path   string // the field: spec.http[0].route[1].destination.subset
	Host   string // the destination's host, as written
	Key    string // the host resolved in the VirtualService's namespace (HostKey)
	Subset string
	// Hidden is the namespace whose sidecars the route applies at where
	// no DestinationRule defining the subset is exported, when one
	// defines it elsewhere (its exportTo leaves that namespace out); ""
	// when none defines it.
	Hidden string
}

// String is the warning shown to the user.
func (u UndefinedSubset) String() string {
	if u.Hidden != "" {
		return fmt.Sprintf("%s: %s: subset %q of %s is defined only by DestinationRules for %s not exported to namespace %s, where the route applies: requests routed there from namespace %s get 503 until a DestinationRule exported there defines it (exportTo)", u.Source, u.Path, u.Subset, u.Host, HostOfKey(u.Key), u.Hidden, u.Hidden)
	}
	return fmt.Sprintf("%s: %s: subset %q of %s is not defined by any DestinationRule for %s: requests routed there get 503 until one defines it", u.Source, u.Path, u.Subset, u.Host, HostOfKey(u.Key))
}

// UndefinedSubsets lists the subsets the VirtualServices of all route or
// mirror to that no DestinationRule of all defines (the service's own, in
// the namespace the host names, else the most specific wildcard that
// covers it), or that none defines that is exported to a namespace the
// route applies in (the VirtualService's own, and the namespaces its
// exportTo names): sidecars there see no such subset (Resource.Visible).
// Istio accepts such a route, and so does Sigil (a warning, not a
// refusal): a request it takes is answered 503, as Envoy answers for a
// cluster with no endpoints, until the subset is defined.
func UndefinedSubsets(all []Resource) []UndefinedSubset {
	everywhere := definedSubsets(all)
	byNamespace := map[string]*hostIndex[map[string]bool]{}
	in := func(ns string) *hostIndex[map[string]bool] {
		x, ok := byNamespace[ns]
		if !ok {
			x = definedSubsets(VisibleIn(all, ns))
			byNamespace[ns] = x
		}
		return x
	}
	var out []UndefinedSubset
	for _, r := range all {
		if r.VS == nil {
			continue
		}
		check := func(path string, d *Destination) {
			if d == nil || d.Subset == "" {
				return
			}
			key, _, _ := HostKey(d.Host, r.Namespace)
			u := UndefinedSubset{Source: r.Ref(), Path: path, Host: d.Host, Key: key, Subset: d.Subset}
			if set, _ := everywhere.lookup(key); !set[d.Subset] {
				out = append(out, u)
				return
			}
			for _, ns := range routeNamespaces(r) {
				if set, _ := in(ns).lookup(key); !set[d.Subset] {
					u.Hidden = ns
					out = append(out, u)
					return
				}
			}
		}
		eachDestination(r.VS, func(path string, d *Destination) { check(path+".subset", d) })
	}
	return out
}

// routeNamespaces are the namespaces whose sidecars a VirtualService is
// known to apply at: its own when visible there, and each namespace its
// exportTo names ("*" and absent add no other: the rest are not known).
func routeNamespaces(r Resource) []string {
	var out []string
	if r.Visible(r.Namespace) {
		out = append(out, r.Namespace)
	}
	for _, ns := range r.VS.Spec.ExportTo {
		if ns != "." && ns != "*" && ns != r.Namespace {
			out = append(out, ns)
		}
	}
	return out
}

// definedSubsets indexes the subsets the DestinationRules of rs define,
// by host: a subset is defined for every workload only when each rule of
// its host defines it.
func definedSubsets(rs []Resource) *hostIndex[map[string]bool] {
	subsets := newHostIndex[map[string]bool]()
	for _, r := range rs {
		if r.DR == nil {
			continue
		}
		key, wild, ok := HostKey(r.DR.Spec.Host, r.Namespace)
		if !ok {
			continue
		}
		if r.hasSelector() {
			continue // below
		}
		set := map[string]bool{}
		for _, s := range r.DR.Spec.Subsets {
			set[s.Name] = true
		}
		subsets.set(key, wild, set)
	}
	// A rule with a workloadSelector replaces the host's rule for the
	// workloads it selects: a subset is defined for every workload only
	// when each rule of its host defines it (none: no rule for the others).
	for _, r := range rs {
		key, wild, ok := "", false, false
		if r.hasSelector() {
			key, wild, ok = HostKey(r.DR.Spec.Host, r.Namespace)
		}
		if !ok {
			continue
		}
		set := subsets.ref(key, wild, func() map[string]bool { return map[string]bool{} })
		for name := range set {
			if !slices.ContainsFunc(r.DR.Spec.Subsets, func(s Subset) bool { return s.Name == name }) {
				delete(set, name)
			}
		}
	}
	return subsets
}

// consistentHash checks a loadBalancer's consistentHash: with no simple
// beside it (Istio's oneof), exactly one key, valid header, parameter and
// cookie names, a cookie ttl of 0 or more, at most one of ringHash and
// maglev.
func (v *validator) consistentHash(p string, lb *LoadBalancer) {
	ch, p := lb.ConsistentHash, p+".consistentHash"
	if lb.Simple != "" {
		v.fail(p, "is set beside simple: a loadBalancer is one of simple and consistentHash")
	}
	keys := 0
	for _, set := range []bool{ch.HTTPHeaderName != "", ch.HTTPCookie != nil, ch.UseSourceIP, ch.HTTPQueryParameterName != ""} {
		if set {
			keys++
		}
	}
	if keys != 1 {
		v.fail(p, "sets %d keys: set exactly one of httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName", keys)
	}
	if ch.HTTPHeaderName != "" && !httpguts.ValidHeaderFieldName(ch.HTTPHeaderName) {
		v.fail(p+".httpHeaderName", "%q is not a header name", ch.HTTPHeaderName)
	}
	if ch.HTTPQueryParameterName != "" && strings.ContainsAny(ch.HTTPQueryParameterName, "&=#? ") {
		v.fail(p+".httpQueryParameterName", "%q is not a query parameter name", ch.HTTPQueryParameterName)
	}
	if c := ch.HTTPCookie; c != nil {
		if c.Name == "" || !httpguts.ValidHeaderFieldName(c.Name) {
			v.fail(p+".httpCookie.name", "%q is not a cookie name (RFC 6265 §4.1.1: a token)", c.Name)
		}
		if c.TTL != nil && c.TTL.Duration != 0 {
			v.duration(p+".httpCookie.ttl", c.TTL)
		}
	}
	if ch.RingHash != nil && ch.Maglev != nil {
		v.fail(p, "sets ringHash and maglev: set at most one")
	}
}
