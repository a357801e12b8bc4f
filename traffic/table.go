package traffic

import (
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/internal/ascii"
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
	// MirrorPort is the mirror's port.number, 0 when unset (WeightedDest.Port).
	MirrorPort uint32
	// Direct, when set, is the answer the sidecar gives itself: the route
	// has no destinations.
	Direct *DirectResponse
	// CORS is the route's corsPolicy, nil when it has none.
	CORS *CORS
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
	// Port is the destination's port.number, 0 when unset: the port whose
	// policy applies (DestinationRule portLevelSettings) is this one, else
	// the port the request was for.
	Port uint32
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
		return v == m.value || m.fold && ascii.EqualFold(v, m.value)
	case 'p':
		return len(v) >= len(m.value) && (v[:len(m.value)] == m.value || m.fold && ascii.EqualFold(v[:len(m.value)], m.value))
	default:
		return m.re.MatchString(v)
	}
}

type match struct {
	uri, method, authority *strMatch
	headers, query         map[string]*strMatch
	sourceLabels           map[string]string
	port                   uint32 // 0: any port
	// gateways: the match names gateways of its own, so sourceLabels do
	// not apply (Istio's sourceMatchHTTP); one that leaves out the mesh
	// is never compiled.
	gateways bool
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

// Match is MatchPort for a request whose port is not known: no route
// with a match.port applies to it.
func (t *Table) Match(service string, r *http.Request, sourceLabels map[string]string) (Matched, bool) {
	return t.MatchPort(service, 0, r, sourceLabels)
}

// MatchPort finds the route for a request to port of service (its key,
// "name.namespace" as naming.Service.String gives it, or an outside host
// as naming.OutsideHost gives it; so are the service arguments of
// HasRoutes, Policy and SubsetLabels) from a sidecar with sourceLabels.
// port is the port the app addressed (0: unknown, which no match.port
// equals). The routes are those of the VirtualService for that host, else
// of the most specific wildcard host that covers it (HostKey); only
// VirtualServices and matches that apply to the mesh are in the table
// (AppliesToMesh, Compile). ok
// is false when no VirtualService covers the service, and also when one
// does but no route matches (Istio answers 404 then; the
// caller decides).
func (t *Table) MatchPort(service string, port uint32, r *http.Request, sourceLabels map[string]string) (Matched, bool) {
	if t == nil {
		return Matched{}, false
	}
	for _, rt := range t.routesOf(service) {
		if len(rt.matches) == 0 {
			return Matched{Route: rt}, true
		}
		for _, m := range rt.matches {
			if m.matches(r, port, sourceLabels) {
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

// HasRoutesAt reports whether a VirtualService has routes for requests to
// port of service from a sidecar with sourceLabels: a route without
// matches, or with a match whose port and sourceLabels (or gateways) fit.
// Istio builds a sidecar's routes per port and drops those whose matches
// cannot apply to it; a VirtualService left with none for the port is
// dropped there, and the service's default route applies (Istio's
// BuildSidecarVirtualHostWrapper). When this is true and MatchPort finds
// nothing, the answer is 404.
func (t *Table) HasRoutesAt(service string, port uint32, sourceLabels map[string]string) bool {
	if t == nil {
		return false
	}
	for _, rt := range t.routesOf(service) {
		if len(rt.matches) == 0 {
			return true
		}
		for _, m := range rt.matches {
			if (m.port == 0 || m.port == port) && (m.gateways || hasAll(sourceLabels, m.sourceLabels)) {
				return true
			}
		}
	}
	return false
}

// hasAll reports whether have holds every label of want, as a match's
// sourceLabels are judged.
func hasAll(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (m *match) matches(r *http.Request, port uint32, src map[string]string) bool {
	if m.port != 0 && m.port != port {
		return false
	}
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
	return m.gateways || hasAll(src, m.sourceLabels)
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

// Policy is PolicyAt for no particular port: portLevelSettings do not
// apply.
func (t *Table) Policy(service, subset string) *TrafficPolicy { return t.PolicyAt(service, subset, 0) }

// PolicyAt returns the traffic policy for requests to port (0: none
// known) of a service's subset, resolved as Istio merges it: the rule's policy,
// then its portLevelSettings entry for port, then each field the subset's
// own policy sets, then the subset's entry for port. A port-level entry
// replaces all of the fields it carries, unset ones with the defaults: it
// inherits nothing (Istio's DestinationRule reference). The result has no
// PortLevelSettings.
func (t *Table) PolicyAt(service, subset string, port uint32) *TrafficPolicy {
	if t == nil {
		return nil
	}
	rule, _ := t.rules.lookup(service)
	if rule == nil {
		return nil
	}
	merged := atPort(rule.Policy, port)
	if s, ok := rule.Subsets[subset]; ok && s.TrafficPolicy != nil {
		sp := s.TrafficPolicy
		if merged == nil {
			merged = &TrafficPolicy{}
		}
		if sp.LoadBalancer != nil {
			merged.LoadBalancer = sp.LoadBalancer
		}
		if sp.ConnectionPool != nil {
			merged.ConnectionPool = sp.ConnectionPool
		}
		if sp.OutlierDetection != nil {
			merged.OutlierDetection = sp.OutlierDetection
		}
		if sp.TLS != nil {
			merged.TLS = sp.TLS
		}
		if pl := portLevel(sp, port); pl != nil {
			merged = pl
		}
	}
	return merged
}

// atPort is a copy of tp without its portLevelSettings, replaced by the
// entry for port if it has one.
func atPort(tp *TrafficPolicy, port uint32) *TrafficPolicy {
	if tp == nil {
		return nil
	}
	if pl := portLevel(tp, port); pl != nil {
		return pl
	}
	out := *tp
	out.PortLevelSettings = nil
	return &out
}

// HasPortPolicy reports whether the DestinationRule of service has a
// portLevelSettings entry for port, at its top or in a subset: only then
// does PolicyAt differ from the policy of no port.
func (t *Table) HasPortPolicy(service string, port uint32) bool {
	if t == nil {
		return false
	}
	rule, _ := t.rules.lookup(service)
	if rule == nil {
		return false
	}
	if rule.Policy != nil && portLevel(rule.Policy, port) != nil {
		return true
	}
	for _, s := range rule.Subsets {
		if s.TrafficPolicy != nil && portLevel(s.TrafficPolicy, port) != nil {
			return true
		}
	}
	return false
}

// portLevel is tp's portLevelSettings entry for port as a policy, or nil.
func portLevel(tp *TrafficPolicy, port uint32) *TrafficPolicy {
	if port == 0 {
		return nil
	}
	for _, ps := range tp.PortLevelSettings {
		if ps.Port != nil && ps.Port.Number == port {
			return &TrafficPolicy{LoadBalancer: ps.LoadBalancer, ConnectionPool: ps.ConnectionPool, OutlierDetection: ps.OutlierDetection, TLS: ps.TLS}
		}
	}
	return nil
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

// Compile is CompileFor a sidecar of no particular namespace: where
// several VirtualServices name one host, the first by namespace/name
// routes it.
func Compile(version int64, resources []Resource) *Table { return CompileFor(version, resources, "") }

// CompileFor builds the table of a sidecar in namespace from validated
// resources (SelectedFor). One VirtualService routes a host (exact or
// wildcard), as at Istio's sidecars, which do not merge VirtualServices
// bound to the mesh: the first of those in namespace (Istio prefers the
// sidecar's own namespace), else the first by namespace/name (Istio takes
// the oldest; Sigil keeps no creation time, and the name order does not
// depend on the order they were applied in). Another one's routes for that
// host never apply, not even where the first has no route for a request.
func CompileFor(version int64, resources []Resource, namespace string) *Table {
	t := &Table{Version: version, routes: newHostIndex[*[]*Route](), rules: newHostIndex[*Rule]()}
	sorted := append([]Resource(nil), resources...)
	// A DestinationRule with a workloadSelector comes after the others, so
	// that for a sidecar it selects it replaces the host's rule without
	// one (Istio's rule: the selecting rule wins).
	sort.Slice(sorted, func(i, j int) bool {
		if a, b := sorted[i].hasSelector(), sorted[j].hasSelector(); a != b {
			return b
		}
		if a, b := sorted[i].Namespace == namespace, sorted[j].Namespace == namespace; a != b {
			return a
		}
		return sorted[i].Key() < sorted[j].Key()
	})
	routed := map[string]bool{} // host keys a VirtualService routes
	for _, r := range sorted {
		t.noteServices(r)
		switch {
		case r.VS != nil && AppliesToMesh(r.VS.Spec.Gateways):
			var hosts []hostKey
			for _, h := range r.VS.Spec.Hosts {
				key, wild, ok := HostKey(h, r.Namespace)
				if !ok || routed[key] {
					continue // Validate refused it, or an earlier VirtualService routes it
				}
				routed[key] = true
				hosts = append(hosts, hostKey{key, wild})
				rs := t.routes.ref(key, wild, func() *[]*Route { return new([]*Route) })
				for i := range r.VS.Spec.HTTP {
					if rt := compileRoute(r.Ref(), r.Namespace, &r.VS.Spec.HTTP[i]); rt != nil {
						*rs = append(*rs, rt)
					}
				}
			}
			t.compileTCPRoutes(r, hosts)
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

// noteServices records the services r names in one of their service
// forms: a VirtualService's hosts and destinations, a DestinationRule's
// host (NamesService).
func (t *Table) noteServices(r Resource) {
	note := func(host string) {
		if svc := ServiceOf(host, r.Namespace); !svc.IsZero() {
			if t.more.services == nil {
				t.more.services = map[naming.Service]bool{}
			}
			t.more.services[svc] = true
		}
	}
	switch {
	case r.VS != nil:
		for _, h := range r.VS.Spec.Hosts {
			note(h)
		}
		eachDestination(r.VS, func(_ string, d *Destination) { note(d.Host) })
	case r.DR != nil:
		note(r.DR.Spec.Host)
	}
}

// NamesService reports whether a VirtualService or DestinationRule of the
// table names svc in one of its service forms (a bare name in svc's
// namespace, svc.ns.svc, svc.ns.svc.cluster.local), as a host or a
// destination: with its endpoints, what makes the mesh know a service,
// so that an app's two-label authority name.ns is read as that service
// (naming.Resolver.AppAuthority).
func (t *Table) NamesService(svc naming.Service) bool { return t != nil && t.more.services[svc] }

// hostKey is a host as HostKey resolves it.
type hostKey struct {
	key      string
	wildcard bool
}

// compileRoute compiles one HTTP route of a VirtualService that applies
// to the mesh; nil when it has matches and none of them does (a route
// whose matches are all for gateways never matches at a sidecar, and must
// not become a catch-all there).
func compileRoute(source, namespace string, h *HTTPRoute) *Route {
	rt := &Route{Name: h.Name, Source: source, Redirect: h.Redirect, Direct: compileDirect(h.DirectResponse), Rewrite: h.Rewrite, Mirror: h.Mirror, Headers: h.Headers, AbortGRPC: -1, CORS: compileCORS(h.CorsPolicy)}
	for _, m := range h.Match {
		if len(m.Gateways) > 0 && !slices.Contains(m.Gateways, MeshGateway) {
			continue
		}
		cm := &match{uri: compileStr(m.URI, m.IgnoreURICase), method: compileStr(m.Method, false),
			authority: compileStr(m.Authority, false), headers: map[string]*strMatch{}, query: map[string]*strMatch{}, sourceLabels: m.SourceLabels,
			port: m.Port, gateways: len(m.Gateways) > 0}
		for k, sm := range m.Headers {
			cm.headers[k] = compileStr(&sm, false)
		}
		for k, sm := range m.QueryParams {
			cm.query[k] = compileStr(&sm, false)
		}
		rt.matches = append(rt.matches, cm)
	}
	if len(h.Match) > 0 && len(rt.matches) == 0 {
		return nil
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
		wd := WeightedDest{Service: svc.Name, Namespace: svc.Namespace, Subset: d.Destination.Subset, Weight: w, Headers: d.Headers, Port: portNumber(d.Destination.Port)}
		if svc.IsZero() {
			key, _, _ := HostKey(d.Destination.Host, namespace)
			wd.Outside = HostOfKey(key)
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
		rt.MirrorPort = portNumber(h.Mirror.Port)
		rt.MirrorPct = pct(h.MirrorPercentage)
	}
	return rt
}

// portNumber is a port selector's number, 0 when there is none.
func portNumber(p *PortSelector) uint32 {
	if p == nil {
		return 0
	}
	return p.Number
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
