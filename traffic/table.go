package traffic

import (
	"math/rand/v2"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/naming"
)

// Table is the compiled configuration a sidecar routes by. It is
// immutable; a new configuration is a new Table, swapped in atomically.
type Table struct {
	Version int64
	routes  *hostIndex[*[]*Route] // by host key (HostKey: "name.namespace" for a service), in order
	rules   *hostIndex[*Rule]     // DestinationRules by host key
	more    moreRules             // tcp routes and rules of hosts outside the mesh (tcproute.go)
}

// Route is a compiled HTTP route.
type Route struct {
	Name      string
	Source    string // "VirtualService ns/name" for logs
	matches   []*match
	Dests     []WeightedDest
	total     int
	Redirect  *HTTPRedirect
	Rewrite   *HTTPRewrite
	rewriteRE *regexp.Regexp // rewrite.uriRegexRewrite.match, or nil
	rewriteTo string         // its rewrite as a Go regexp template
	Timeout   time.Duration
	Attempts  int
	PerTry    time.Duration
	RetryOn   RetryOn
	Delay     time.Duration
	DelayPct  float64
	AbortHTTP int
	AbortGRPC int // -1 when unset
	AbortPct  float64
	Mirror    *Destination
	MirrorTo  naming.Service // Mirror's host, resolved in the VirtualService's namespace
	MirrorPct float64
	Headers   *Headers
}

// WeightedDest is one destination of a route.
type WeightedDest struct {
	Service   string // the service's name
	Namespace string // its namespace (a bare host: the VirtualService's)
	Subset    string
	Weight    int
	Headers   *Headers
	// Outside is the destination's host when it is not a mesh service
	// (Service and Namespace are then empty): lower case, as HostKey.
	Outside string
}

type strMatch struct {
	kind  byte // 'e', 'p', 'r'
	value string
	fold  bool // exact and prefix: ASCII case-insensitive
	re    *regexp.Regexp
}

// compileStr compiles a string match. fold makes exact and prefix
// matches ASCII case-insensitive (Istio's ignoreUriCase, Envoy's
// case_sensitive: false); a regex is never folded, as Istio documents.
func compileStr(sm *StringMatch, fold bool) *strMatch {
	switch {
	case sm == nil:
		return nil
	case sm.Exact != nil:
		return &strMatch{kind: 'e', value: *sm.Exact, fold: fold}
	case sm.Prefix != nil:
		return &strMatch{kind: 'p', value: *sm.Prefix, fold: fold}
	default:
		// Istio's regexes are RE2 and must match the whole value.
		return &strMatch{kind: 'r', re: regexp.MustCompile("^(?:" + *sm.Regex + ")$")}
	}
}

func (m *strMatch) ok(v string, present bool) bool {
	if !present {
		return false
	}
	switch m.kind {
	case 'e':
		return v == m.value || m.fold && asciiEqualFold(v, m.value)
	case 'p':
		return len(v) >= len(m.value) && (v[:len(m.value)] == m.value || m.fold && asciiEqualFold(v[:len(m.value)], m.value))
	default:
		return m.re.MatchString(v)
	}
}

// asciiEqualFold compares ASCII letters without case and every other byte
// exactly, as Envoy's case-insensitive path match does. Unlike
// strings.EqualFold it never equates strings of different byte lengths, so
// a matched prefix is always the same number of bytes of the path.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

type match struct {
	uri, method, authority *strMatch
	headers, query         map[string]*strMatch
	sourceLabels           map[string]string
}

// Matched is a route with what matched, for rewrites.
type Matched struct {
	*Route
	// PrefixMatched is the part of the request's path that the URI
	// prefix of the applied match matched, as the request spelled it (it
	// differs from the configured prefix in case under ignoreUriCase), or
	// "" when the match was not by URI prefix.
	PrefixMatched string
}

// Match finds the route for a request to service (its key, "name.namespace"
// as naming.Service.String gives it, or an outside host as
// naming.OutsideHost gives it; so are the service arguments of HasRoutes,
// Policy and SubsetLabels) from a sidecar with sourceLabels. The routes
// are those of the VirtualService for that host, else of the most
// specific wildcard host that covers it (HostKey). ok
// is false when no VirtualService covers the service, and also when one
// does but no route matches (Istio answers 404 then; the
// caller decides).
func (t *Table) Match(service string, r *http.Request, sourceLabels map[string]string) (Matched, bool) {
	if t == nil {
		return Matched{}, false
	}
	for _, rt := range t.routesOf(service) {
		if len(rt.matches) == 0 {
			return Matched{Route: rt}, true
		}
		for _, m := range rt.matches {
			if m.matches(r, sourceLabels) {
				prefix := ""
				if m.uri != nil && m.uri.kind == 'p' {
					prefix = r.URL.Path[:len(m.uri.value)]
				}
				return Matched{Route: rt, PrefixMatched: prefix}, true
			}
		}
	}
	return Matched{}, false
}

// HasRoutes reports whether a VirtualService covers service.
func (t *Table) HasRoutes(service string) bool { return t != nil && len(t.routesOf(service)) > 0 }

func (t *Table) routesOf(service string) []*Route {
	if rs, ok := t.routes.lookup(service); ok {
		return *rs
	}
	return nil
}

func (m *match) matches(r *http.Request, src map[string]string) bool {
	if m.uri != nil && !m.uri.ok(r.URL.Path, true) {
		return false
	}
	if m.method != nil && !m.method.ok(r.Method, true) {
		return false
	}
	if m.authority != nil && !m.authority.ok(r.Host, true) {
		return false
	}
	for k, sm := range m.headers {
		v, present := r.Header[http.CanonicalHeaderKey(k)]
		if !sm.ok(strings.Join(v, ","), present) {
			return false
		}
	}
	if len(m.query) > 0 {
		q := r.URL.Query()
		for k, sm := range m.query {
			v, present := q[k]
			if !present || !sm.ok(v[0], true) {
				return false
			}
		}
	}
	for k, want := range m.sourceLabels {
		if src[k] != want {
			return false
		}
	}
	return true
}

// Pick chooses a destination by weight.
func (rt *Route) Pick() WeightedDest {
	if len(rt.Dests) == 1 || rt.total == 0 {
		return rt.Dests[0]
	}
	n := rand.IntN(rt.total)
	for _, d := range rt.Dests {
		if n < d.Weight {
			return d
		}
		n -= d.Weight
	}
	return rt.Dests[len(rt.Dests)-1]
}

// Rule is a compiled DestinationRule.
type Rule struct {
	Source  string
	Policy  *TrafficPolicy
	Subsets map[string]Subset
}

// Policy returns the traffic policy for a service's subset: the subset's
// own where it sets one, else the rule's.
func (t *Table) Policy(service, subset string) *TrafficPolicy {
	if t == nil {
		return nil
	}
	rule, _ := t.rules.lookup(service)
	if rule == nil {
		return nil
	}
	if s, ok := rule.Subsets[subset]; ok && s.TrafficPolicy != nil {
		merged := *s.TrafficPolicy
		if rule.Policy != nil {
			if merged.LoadBalancer == nil {
				merged.LoadBalancer = rule.Policy.LoadBalancer
			}
			if merged.ConnectionPool == nil {
				merged.ConnectionPool = rule.Policy.ConnectionPool
			}
			if merged.OutlierDetection == nil {
				merged.OutlierDetection = rule.Policy.OutlierDetection
			}
			if merged.TLS == nil {
				merged.TLS = rule.Policy.TLS
			}
		}
		return &merged
	}
	return rule.Policy
}

// SubsetLabels returns the labels of a service's subset, and whether the
// subset is defined.
func (t *Table) SubsetLabels(service, subset string) (map[string]string, bool) {
	if t == nil {
		return nil, false
	}
	rule, _ := t.rules.lookup(service)
	if rule == nil {
		return nil, false
	}
	s, ok := rule.Subsets[subset]
	return s.Labels, ok
}

// Compile builds a table from validated resources. Routes of several
// VirtualServices for one host keep the order of their names, so the
// result does not depend on the order they were applied in.
func Compile(version int64, resources []Resource) *Table {
	t := &Table{Version: version, routes: newHostIndex[*[]*Route](), rules: newHostIndex[*Rule]()}
	sorted := append([]Resource(nil), resources...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Key() < sorted[j].Key() })
	for _, r := range sorted {
		switch {
		case r.VS != nil:
			for _, h := range r.VS.Spec.Hosts {
				key, wild, ok := HostKey(h, r.Namespace)
				if !ok {
					continue // Validate refused it
				}
				rs := t.routes.ref(key, wild, func() *[]*Route { return new([]*Route) })
				for i := range r.VS.Spec.HTTP {
					*rs = append(*rs, compileRoute(r.Ref(), r.Namespace, &r.VS.Spec.HTTP[i]))
				}
			}
			t.compileTCPRoutes(r)
		case r.DR != nil:
			rule := &Rule{Source: r.Ref(), Policy: r.DR.Spec.TrafficPolicy, Subsets: map[string]Subset{}}
			for _, s := range r.DR.Spec.Subsets {
				rule.Subsets[s.Name] = s
			}
			if t.addExternalRule(r, rule) {
				continue
			}
			if key, wild, ok := HostKey(r.DR.Spec.Host, r.Namespace); ok {
				t.rules.set(key, wild, rule)
			}
		}
	}
	return t
}

func compileRoute(source, namespace string, h *HTTPRoute) *Route {
	rt := &Route{Name: h.Name, Source: source, Redirect: h.Redirect, Rewrite: h.Rewrite, Mirror: h.Mirror, Headers: h.Headers, AbortGRPC: -1}
	for _, m := range h.Match {
		cm := &match{uri: compileStr(m.URI, m.IgnoreURICase), method: compileStr(m.Method, false),
			authority: compileStr(m.Authority, false), headers: map[string]*strMatch{}, query: map[string]*strMatch{}, sourceLabels: m.SourceLabels}
		for k, sm := range m.Headers {
			cm.headers[k] = compileStr(&sm, false)
		}
		for k, sm := range m.QueryParams {
			cm.query[k] = compileStr(&sm, false)
		}
		rt.matches = append(rt.matches, cm)
	}
	for _, d := range h.Route {
		w := 0 // weights are relative; an unset one is 0 (Istio)
		if d.Weight != nil {
			w = int(*d.Weight)
		}
		if len(h.Route) == 1 {
			w = 100
		}
		svc := ServiceOf(d.Destination.Host, namespace)
		wd := WeightedDest{Service: svc.Name, Namespace: svc.Namespace, Subset: d.Destination.Subset, Weight: w, Headers: d.Headers}
		if svc.IsZero() {
			wd.Outside, _, _ = HostKey(d.Destination.Host, namespace)
		}
		rt.Dests = append(rt.Dests, wd)
		rt.total += w
	}
	if rw := h.Rewrite; rw != nil && rw.URIRegexRewrite != nil {
		rt.rewriteRE = regexp.MustCompile(rw.URIRegexRewrite.Match)
		rt.rewriteTo, _, _ = expandTemplate(rw.URIRegexRewrite.Rewrite)
	}
	if h.Timeout != nil {
		rt.Timeout = h.Timeout.Duration
	}
	rt.Attempts, rt.RetryOn = DefaultAttempts, mustRetryOn(DefaultRetryOn)
	if r := h.Retries; r != nil {
		rt.Attempts, rt.RetryOn = int(r.Attempts), mustRetryOn(r.RetryOn)
		if r.RetryOn == "" {
			rt.RetryOn = mustRetryOn(DefaultRetryOn)
		}
		if r.PerTryTimeout != nil {
			rt.PerTry = r.PerTryTimeout.Duration
		}
	}
	if f := h.Fault; f != nil {
		if f.Delay != nil {
			rt.Delay, rt.DelayPct = f.Delay.FixedDelay.Duration, pct(f.Delay.Percentage)
		}
		if a := f.Abort; a != nil {
			rt.AbortHTTP, rt.AbortPct = int(a.HTTPStatus), pct(a.Percentage)
			if a.GRPCStatus != "" {
				rt.AbortGRPC = GRPCCodes[a.GRPCStatus]
			}
		}
	}
	if h.Mirror != nil {
		rt.MirrorTo = ServiceOf(h.Mirror.Host, namespace)
		rt.MirrorPct = pct(h.MirrorPercentage)
	}
	return rt
}

// pct is Istio's rule: an absent percentage means 100.
func pct(p *Percent) float64 {
	if p == nil {
		return 100
	}
	return p.Value
}

func mustRetryOn(s string) RetryOn {
	r, _ := ParseRetryOn(s)
	return r
}
