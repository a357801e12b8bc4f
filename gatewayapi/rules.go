package gatewayapi

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// entry is one match of one rule of a route: one http route of the
// VirtualService, with what orders it among the others.
type entry struct {
	rank  rank
	route *Route
	rule  int
	match int
	http  traffic.HTTPRoute // exactly one match, no port yet
}

// rank is Gateway API's match precedence (HTTPRouteRule.matches): an
// exact path, then a regular expression (Istio's place for it: the spec
// leaves it to the implementation), then the longest prefix; then a
// method match, the most header matches, the most query matches.
type rank struct {
	pathKind int // 3 exact, 2 regex, 1 prefix
	pathLen  int
	method   bool
	headers  int
	query    int
}

// less orders a before b: the higher rank first.
func (a rank) less(b rank) bool {
	switch {
	case a.pathKind != b.pathKind:
		return a.pathKind > b.pathKind
	case a.pathLen != b.pathLen:
		return a.pathLen > b.pathLen
	case a.method != b.method:
		return a.method
	case a.headers != b.headers:
		return a.headers > b.headers
	}
	return a.query > b.query
}

// ruleSet is a route's rules compiled: entries, and what the backends
// that cannot be reached say in status (ResolvedRefs).
type ruleSet struct {
	entries  []entry
	unresolv []refProblem
}

// refProblem is a backendRef Sigil cannot send to.
type refProblem struct {
	reason  gwv1.RouteConditionReason
	message string
}

func unsupported(path, format string, args ...any) error {
	return fmt.Errorf("gatewayapi: %s: %s", path, fmt.Sprintf(format, args...))
}

// compileRules turns a route's rules into entries, refusing what Sigil
// does not enforce.
func compileRules(r *Route) (ruleSet, error) {
	var out ruleSet
	for i := range r.spec.Rules {
		rule := &r.spec.Rules[i]
		p := fmt.Sprintf("spec.rules[%d]", i)
		if rule.Retry != nil {
			return out, unsupported(p+".retry", "not supported (use a VirtualService's retries)")
		}
		if rule.SessionPersistence != nil {
			return out, unsupported(p+".sessionPersistence", "session persistence is not enforced by Sigil's sidecars")
		}
		base, pathMod, err := ruleAction(r, rule, p, &out)
		if err != nil {
			return out, err
		}
		for j := range rule.Matches {
			es, err := matchEntries(rule.Matches[j], base, pathMod, fmt.Sprintf("%s.matches[%d]", p, j))
			if err != nil {
				return out, err
			}
			for _, e := range es {
				e.route, e.rule, e.match = r, i, j
				out.entries = append(out.entries, e)
			}
		}
	}
	return out, nil
}

// pathModifier is a URLRewrite or RequestRedirect path change that
// depends on the match (ReplacePrefixMatch), applied per entry.
type pathModifier struct {
	prefix   *string // ReplacePrefixMatch's value
	redirect bool    // of a RequestRedirect, not a URLRewrite
}

// ruleAction is what every match of a rule does: its backends, filters
// and timeout, as a VirtualService http route without matches.
func ruleAction(r *Route, rule *gwv1.HTTPRouteRule, p string, rs *ruleSet) (traffic.HTTPRoute, pathModifier, error) {
	var h traffic.HTTPRoute
	if rule.Name != nil {
		h.Name = string(*rule.Name)
	}
	var pm pathModifier
	if t := rule.Timeouts; t != nil {
		if t.BackendRequest != nil {
			return h, pm, unsupported(p+".timeouts.backendRequest", "not supported (timeouts.request is)")
		}
		if t.Request != nil {
			d, err := time.ParseDuration(string(*t.Request))
			if err != nil || d < 0 {
				return h, pm, unsupported(p+".timeouts.request", "%q is not a duration", *t.Request)
			}
			if d > 0 { // 0s: no timeout (GEP-1742)
				h.Timeout = &traffic.Duration{Duration: d}
			}
		}
	}
	seen := map[gwv1.HTTPRouteFilterType]bool{}
	for i, f := range rule.Filters {
		fp := fmt.Sprintf("%s.filters[%d]", p, i)
		if seen[f.Type] && f.Type != gwv1.HTTPRouteFilterRequestMirror {
			return h, pm, unsupported(fp+".type", "%s is given twice in one rule", f.Type)
		}
		seen[f.Type] = true
		if err := applyFilter(r, &h, &pm, f, fp); err != nil {
			return h, pm, err
		}
	}
	if h.Redirect != nil && seen[gwv1.HTTPRouteFilterURLRewrite] {
		return h, pm, unsupported(p+".filters", "RequestRedirect and URLRewrite cannot be used together")
	}
	if h.Redirect != nil && len(rule.BackendRefs) > 0 {
		return h, pm, unsupported(p+".backendRefs", "a rule with a RequestRedirect has no backendRefs")
	}
	if h.Redirect != nil {
		return h, pm, nil
	}
	err := backends(r, &h, rule.BackendRefs, p, rs)
	return h, pm, err
}

// applyFilter sets what filter f does on h.
func applyFilter(r *Route, h *traffic.HTTPRoute, pm *pathModifier, f gwv1.HTTPRouteFilter, p string) error {
	switch f.Type {
	case gwv1.HTTPRouteFilterRequestHeaderModifier, gwv1.HTTPRouteFilterResponseHeaderModifier:
		if h.Headers == nil {
			h.Headers = &traffic.Headers{}
		}
		if f.Type == gwv1.HTTPRouteFilterRequestHeaderModifier {
			ops, err := headerOps(f.RequestHeaderModifier, p+".requestHeaderModifier")
			h.Headers.Request = ops
			return err
		}
		ops, err := headerOps(f.ResponseHeaderModifier, p+".responseHeaderModifier")
		h.Headers.Response = ops
		return err
	case gwv1.HTTPRouteFilterURLRewrite:
		rw := f.URLRewrite
		if rw == nil {
			return unsupported(p+".urlRewrite", "required by type URLRewrite")
		}
		if rw.Hostname == nil && rw.Path == nil {
			return unsupported(p+".urlRewrite", "set hostname or path")
		}
		h.Rewrite = &traffic.HTTPRewrite{}
		if rw.Hostname != nil {
			h.Rewrite.Authority = string(*rw.Hostname)
		}
		if rw.Path != nil {
			full, prefix, err := pathModifierOf(rw.Path, p+".urlRewrite.path")
			if err != nil {
				return err
			}
			if full != nil {
				// The whole path, whatever the match: a regex rewrite,
				// since rewrite.uri replaces only a matched prefix.
				h.Rewrite.URIRegexRewrite = &traffic.RegexRewrite{Match: "^.*$", Rewrite: strings.ReplaceAll(*full, `\`, `\\`)}
			}
			pm.prefix = prefix
		}
		return nil
	case gwv1.HTTPRouteFilterRequestRedirect:
		return redirect(h, pm, f.RequestRedirect, p+".requestRedirect")
	case gwv1.HTTPRouteFilterRequestMirror:
		return mirror(r, h, f.RequestMirror, p+".requestMirror")
	}
	return unsupported(p+".type", "filter type %q is not supported (RequestHeaderModifier, ResponseHeaderModifier, URLRewrite, RequestRedirect, RequestMirror are)", f.Type)
}

// headerOps is a header filter as Istio's header operations. A header
// named twice keeps its first value, as the spec asks.
func headerOps(f *gwv1.HTTPHeaderFilter, p string) (*traffic.HeaderOperations, error) {
	if f == nil {
		return nil, unsupported(p, "required by the filter's type")
	}
	ops := &traffic.HeaderOperations{}
	put := func(m *map[string]string, hs []gwv1.HTTPHeader) {
		for _, hh := range hs {
			if *m == nil {
				*m = map[string]string{}
			}
			k := strings.ToLower(string(hh.Name))
			if _, dup := (*m)[k]; !dup {
				(*m)[k] = hh.Value
			}
		}
	}
	put(&ops.Set, f.Set)
	put(&ops.Add, f.Add)
	for _, name := range f.Remove {
		ops.Remove = append(ops.Remove, strings.ToLower(name))
	}
	return ops, nil
}

func pathModifierOf(m *gwv1.HTTPPathModifier, p string) (full, prefix *string, err error) {
	switch m.Type {
	case gwv1.FullPathHTTPPathModifier:
		if m.ReplaceFullPath == nil || m.ReplacePrefixMatch != nil {
			return nil, nil, unsupported(p, "type ReplaceFullPath takes replaceFullPath only")
		}
		return m.ReplaceFullPath, nil, nil
	case gwv1.PrefixMatchHTTPPathModifier:
		if m.ReplacePrefixMatch == nil || m.ReplaceFullPath != nil {
			return nil, nil, unsupported(p, "type ReplacePrefixMatch takes replacePrefixMatch only")
		}
		return nil, m.ReplacePrefixMatch, nil
	}
	return nil, nil, unsupported(p+".type", "%q: want ReplaceFullPath or ReplacePrefixMatch", m.Type)
}

// redirect maps RequestRedirect onto Istio's redirect. Gateway API's
// port rule: an explicit port; else the scheme's well-known port when
// the scheme is set; else the port the request came to (the Service's:
// a mesh route's "listener"). The default status is 302.
func redirect(h *traffic.HTTPRoute, pm *pathModifier, f *gwv1.HTTPRequestRedirectFilter, p string) error {
	if f == nil {
		return unsupported(p, "required by type RequestRedirect")
	}
	rd := &traffic.HTTPRedirect{RedirectCode: http.StatusFound}
	if f.Scheme != nil {
		if *f.Scheme != "http" && *f.Scheme != "https" {
			return unsupported(p+".scheme", "%q: want http or https", *f.Scheme)
		}
		rd.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		rd.Authority = string(*f.Hostname)
	}
	switch {
	case f.Port != nil:
		rd.Port = uint32(*f.Port)
	case f.Scheme != nil:
		rd.DerivePort = traffic.DerivePortFromProtocolDefault
	default:
		rd.DerivePort = traffic.DerivePortFromRequestPort
	}
	if f.StatusCode != nil {
		switch c := *f.StatusCode; c {
		case 301, 302, 303, 307, 308:
			rd.RedirectCode = uint32(c)
		default:
			return unsupported(p+".statusCode", "%d: want 301, 302, 303, 307 or 308", c)
		}
	}
	if f.Path != nil {
		full, prefix, err := pathModifierOf(f.Path, p+".path")
		if err != nil {
			return err
		}
		if full != nil {
			rd.URI = *full
		}
		pm.prefix, pm.redirect = prefix, prefix != nil
	}
	h.Redirect = rd
	return nil
}

// mirror maps RequestMirror onto Istio's mirror (one per rule).
func mirror(r *Route, h *traffic.HTTPRoute, f *gwv1.HTTPRequestMirrorFilter, p string) error {
	if f == nil {
		return unsupported(p, "required by type RequestMirror")
	}
	if h.Mirror != nil {
		return unsupported(p, "one RequestMirror per rule is supported")
	}
	svc, port, problem := backendService(r, f.BackendRef, p+".backendRef")
	if problem != nil {
		return unsupported(p+".backendRef", "%s", problem.message)
	}
	h.Mirror = &traffic.Destination{Host: fqdn(svc), Port: &traffic.PortSelector{Number: port}}
	switch {
	case f.Percent != nil && f.Fraction != nil:
		return unsupported(p, "percent and fraction: give one")
	case f.Percent != nil:
		h.MirrorPercentage = &traffic.Percent{Value: float64(*f.Percent)}
	case f.Fraction != nil:
		den := int32(100)
		if f.Fraction.Denominator != nil {
			den = *f.Fraction.Denominator
		}
		if den <= 0 || f.Fraction.Numerator < 0 || f.Fraction.Numerator > den {
			return unsupported(p+".fraction", "%d/%d is not a fraction from 0 to 1", f.Fraction.Numerator, den)
		}
		h.MirrorPercentage = &traffic.Percent{Value: 100 * float64(f.Fraction.Numerator) / float64(den)}
	}
	return nil
}

// backends sets h's destinations. Weights are relative, as Sigil's are,
// so they carry over as written. What Gateway API answers with a 500
// stays a 500: a rule without backends, or whose weights are all 0
// (a direct response); and the share of requests the weights give to
// backends Sigil cannot reach (an abort of that percentage).
func backends(r *Route, h *traffic.HTTPRoute, refs []gwv1.HTTPBackendRef, p string, rs *ruleSet) error {
	var good, bad int64
	for i, b := range refs {
		bp := fmt.Sprintf("%s.backendRefs[%d]", p, i)
		w := int64(*b.Weight)
		if w < 0 || w > 1_000_000 {
			return unsupported(bp+".weight", "%d: want 0 to 1000000", w)
		}
		if b.Port == nil && *b.Group == "" && *b.Kind == "Service" {
			return unsupported(bp+".port", "required for a Service")
		}
		if b.Port != nil && (*b.Port < 1 || *b.Port > 65535) {
			return unsupported(bp+".port", "%d is not a port", *b.Port)
		}
		svc, port, problem := backendService(r, b.BackendObjectReference, bp)
		if problem != nil {
			rs.unresolv = append(rs.unresolv, *problem)
			bad += w
			continue
		}
		d := traffic.HTTPRouteDestination{Destination: traffic.Destination{Host: fqdn(svc), Port: &traffic.PortSelector{Number: port}}, Weight: ptr(int32(w))}
		for j, f := range b.Filters {
			fp := fmt.Sprintf("%s.filters[%d]", bp, j)
			switch f.Type {
			case gwv1.HTTPRouteFilterRequestHeaderModifier, gwv1.HTTPRouteFilterResponseHeaderModifier:
				var tmp traffic.HTTPRoute
				if err := applyFilter(r, &tmp, &pathModifier{}, f, fp); err != nil {
					return err
				}
				if d.Headers == nil {
					d.Headers = &traffic.Headers{}
				}
				if tmp.Headers.Request != nil {
					d.Headers.Request = tmp.Headers.Request
				}
				if tmp.Headers.Response != nil {
					d.Headers.Response = tmp.Headers.Response
				}
			default:
				return unsupported(fp+".type", "filter type %q is not supported on a backendRef (RequestHeaderModifier, ResponseHeaderModifier are)", f.Type)
			}
		}
		good += w
		h.Route = append(h.Route, d)
	}
	if good == 0 {
		h.Route = nil
		h.DirectResponse = &traffic.HTTPDirectResponse{Status: http.StatusInternalServerError}
		return nil
	}
	if bad > 0 {
		h.Fault = &traffic.HTTPFaultInjection{Abort: &traffic.FaultAbort{HTTPStatus: http.StatusInternalServerError,
			Percentage: &traffic.Percent{Value: 100 * float64(bad) / float64(good+bad)}}}
	}
	return nil
}

// backendService resolves a Service backend. A backend in another
// namespace than the route's is refused (Sigil reads no ReferenceGrant)
// unless it is one of the route's own Service parents: a consumer route
// sending to the Service it is attached to, as GAMMA's consumer routes do.
func backendService(r *Route, b gwv1.BackendObjectReference, p string) (naming.Service, uint32, *refProblem) {
	if *b.Group != "" || *b.Kind != "Service" {
		return naming.Service{}, 0, &refProblem{gwv1.RouteReasonInvalidKind, fmt.Sprintf("%s: %s/%s: Sigil sends to Services (group \"\", kind Service) only", p, *b.Group, *b.Kind)}
	}
	svc := naming.Service{Name: string(b.Name), Namespace: string(*b.Namespace)}
	if !naming.ValidServiceName(svc.Name) || !naming.ValidNamespace(svc.Namespace) {
		return naming.Service{}, 0, &refProblem{gwv1.RouteReasonBackendNotFound, fmt.Sprintf("%s: %s is not a Service name", p, naming.Quote(svc.Name+"."+svc.Namespace))}
	}
	if b.Port == nil {
		return naming.Service{}, 0, &refProblem{gwv1.RouteReasonUnsupportedValue, p + ".port: required for a Service"}
	}
	if svc.Namespace != r.Namespace && !isParent(r, svc) {
		return naming.Service{}, 0, &refProblem{gwv1.RouteReasonRefNotPermitted, fmt.Sprintf("%s: Service %s/%s is in another namespace (Sigil reads no ReferenceGrant)", p, svc.Namespace, svc.Name)}
	}
	return svc, uint32(*b.Port), nil
}

func isParent(r *Route, svc naming.Service) bool {
	for _, p := range servicesOf(r) {
		if p.svc == svc {
			return true
		}
	}
	return false
}

func fqdn(s naming.Service) string { return naming.Resolver{}.FQDN(s) }

// matchEntries turns one match into one entry, or two for a PathPrefix
// that is not "/": Gateway API's prefix is segment-aware ("/foo" matches
// "/foo", "/foo/" and "/foo/bar", never "/foobar"), which is the exact
// path "/foo" or the plain prefix "/foo/" (Istio's translation). A
// trailing "/" of the value is ignored, as the spec says.
func matchEntries(m gwv1.HTTPRouteMatch, base traffic.HTTPRoute, pm pathModifier, p string) ([]entry, error) {
	mr := traffic.HTTPMatchRequest{}
	var rk rank
	if m.Method != nil {
		mr.Method = &traffic.StringMatch{Exact: ptr(string(*m.Method))}
		rk.method = true
	}
	for i, hm := range m.Headers {
		// Header names are case-insensitive (RFC 9110 section 5.1).
		err := putMatch(&mr.Headers, strings.ToLower(string(hm.Name)), string(*hm.Type), hm.Value, fmt.Sprintf("%s.headers[%d]", p, i))
		if err != nil {
			return nil, err
		}
	}
	for i, qm := range m.QueryParams {
		err := putMatch(&mr.QueryParams, string(qm.Name), string(*qm.Type), qm.Value, fmt.Sprintf("%s.queryParams[%d]", p, i))
		if err != nil {
			return nil, err
		}
	}
	rk.headers, rk.query = len(mr.Headers), len(mr.QueryParams)
	value := *m.Path.Value
	if !strings.HasPrefix(value, "/") {
		return nil, unsupported(p+".path.value", "%q must start with /", value)
	}
	var out []entry
	add := func(uri traffic.StringMatch, rewrite *string) {
		h := base
		mm := mr
		mm.URI = &uri
		h.Match = []traffic.HTTPMatchRequest{mm}
		if rewrite != nil {
			if pm.redirect {
				rd := *h.Redirect
				rd.URI = *rewrite
				if uri.Prefix != nil {
					rd.URI = traffic.RedirectPrefixMarker + *rewrite
				}
				h.Redirect = &rd
			} else {
				rw := traffic.HTTPRewrite{}
				if h.Rewrite != nil {
					rw = *h.Rewrite
				}
				rw.URI = *rewrite
				h.Rewrite = &rw
			}
		}
		out = append(out, entry{rank: rk, http: h})
	}
	switch *m.Path.Type {
	case gwv1.PathMatchExact:
		if pm.prefix != nil {
			return nil, unsupported(p+".path.type", "ReplacePrefixMatch needs a PathPrefix match")
		}
		rk.pathKind, rk.pathLen = 3, len(value)
		add(traffic.StringMatch{Exact: ptr(value)}, nil)
	case gwv1.PathMatchRegularExpression:
		if pm.prefix != nil {
			return nil, unsupported(p+".path.type", "ReplacePrefixMatch needs a PathPrefix match")
		}
		if _, err := regexp.Compile(value); err != nil {
			return nil, unsupported(p+".path.value", "not an RE2 regular expression: %v", err)
		}
		rk.pathKind, rk.pathLen = 2, len(value)
		add(traffic.StringMatch{Regex: ptr(value)}, nil)
	case gwv1.PathMatchPathPrefix:
		trimmed := strings.TrimRight(value, "/")
		rk.pathKind, rk.pathLen = 1, len(trimmed)
		var exact, sub *string
		if pm.prefix != nil {
			// ReplacePrefixMatch, segment-aware: "/foo" → "/xyz" makes
			// "/foo" "/xyz" and "/foo/bar" "/xyz/bar"; to "" or "/",
			// "/foo" is "/" and "/foo/bar" "/bar".
			to := strings.TrimRight(*pm.prefix, "/")
			exact, sub = ptr(to), ptr(to+"/")
			if to == "" {
				exact = ptr("/")
			}
			if !strings.HasPrefix(to+"/", "/") {
				return nil, unsupported(p, "replacePrefixMatch %q must start with /", *pm.prefix)
			}
		}
		if trimmed != "" {
			add(traffic.StringMatch{Exact: ptr(trimmed)}, exact)
		}
		add(traffic.StringMatch{Prefix: ptr(trimmed + "/")}, sub)
	default:
		return nil, unsupported(p+".path.type", "%q: want Exact, PathPrefix or RegularExpression", *m.Path.Type)
	}
	for i := range out {
		out[i].rank = rk
	}
	return out, nil
}

// putMatch adds a header or query match of name to dst; a name given
// twice keeps its first match, as the spec says.
func putMatch(dst *map[string]traffic.StringMatch, name, typ, value, p string) error {
	if _, dup := (*dst)[name]; dup {
		return nil
	}
	sm, err := stringMatch(typ, value, p)
	if err != nil {
		return err
	}
	if *dst == nil {
		*dst = map[string]traffic.StringMatch{}
	}
	(*dst)[name] = sm
	return nil
}

// stringMatch is an Exact or RegularExpression header or query match.
func stringMatch(typ, value, p string) (traffic.StringMatch, error) {
	switch typ {
	case "Exact":
		return traffic.StringMatch{Exact: ptr(value)}, nil
	case "RegularExpression":
		if _, err := regexp.Compile(value); err != nil {
			return traffic.StringMatch{}, unsupported(p+".value", "not an RE2 regular expression: %v", err)
		}
		return traffic.StringMatch{Regex: ptr(value)}, nil
	}
	return traffic.StringMatch{}, unsupported(p+".type", "%q: want Exact or RegularExpression", typ)
}
