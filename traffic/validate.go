package traffic

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/naming"
)

// Validate checks one resource on its own and names every bad field.
func Validate(r Resource) error {
	var v validator
	if !naming.ValidNamespace(r.Namespace) {
		v.fail("metadata.namespace", "%q is not a namespace (a DNS label: a-z, 0-9, inner '-', at most 63)", r.Namespace)
	}
	switch {
	case r.VS != nil:
		v.virtualService(r.VS)
	case r.DR != nil:
		v.destinationRule(r.DR, r.Namespace)
		v.workloadSelector(r.DR, r.Namespace)
	case r.Policy != nil:
		v.policy(r.Policy)
	}
	if len(v.problems) == 0 {
		return nil
	}
	return fmt.Errorf("traffic: %s: %s", r.Ref(), strings.Join(v.problems, "\n"))
}

// validator collects a resource's problems, one line each ("path:
// what is wrong"), for Validate to return as one error.
type validator struct{ problems []string }

func (v *validator) fail(path, format string, args ...any) {
	v.problems = append(v.problems, path+": "+fmt.Sprintf(format, args...))
}

// ServiceOf resolves a host as a resource in namespace writes it ("api",
// "api.prod.svc", "api.prod.svc.cluster.local"), as Istio reads it
// (naming.Resolver.ResourceHost): a bare name is a service of the
// resource's own namespace; any other dotted name, two labels included
// ("httpbin.org", "api.prod"), is a host outside the mesh. It returns the
// zero Service for a host that is not a mesh service: an outside host or
// a wildcard (HostKey keys those).
func ServiceOf(host, namespace string) naming.Service {
	h, err := resourceHost(host, namespace)
	if err != nil || h.Kind != naming.MeshService {
		return naming.Service{}
	}
	return h.Service
}

// resourceHost reads host as a resource in namespace writes it ("": the
// default namespace).
func resourceHost(host, namespace string) (naming.ResourceHost, error) {
	if namespace == "" {
		return naming.Resolver{}.ResourceHost(host)
	}
	r, err := naming.NewResolver(namespace, naming.DefaultClusterDomain)
	if err != nil {
		return naming.ResourceHost{}, err
	}
	return r.ResourceHost(host)
}

// host checks a resource's host: a mesh service in one of its forms, a
// host outside the mesh (kept apart: it never attaches to a service), or
// a wildcard "*.suffix" (HostKey). "*" alone is refused where everyAllowed
// is false: as in Istio, a VirtualService that applies to sidecars cannot
// take every host, the mesh's own services included.
func (v *validator) host(path, h string, everyAllowed bool) {
	if h == "" {
		v.fail(path, "required")
		return
	}
	if h == "*" && !everyAllowed {
		v.fail(path, "the wildcard host \"*\" is not allowed for a VirtualService that applies to sidecars (name the hosts, or \"*.suffix\")")
		return
	}
	if _, err := naming.ParseHostPattern(h); err != nil {
		v.fail(path, "%s is not a host name: %v", naming.Quote(h), err)
	}
}

// destinationHost checks a route's or a mirror's destination host: a
// service or an outside host, never a wildcard (a request goes to one
// host).
func (v *validator) destinationHost(path, h string) {
	v.host(path, h, false)
	if strings.HasPrefix(h, "*") {
		v.fail(path, "%s: a destination is one host, not a wildcard", naming.Quote(h))
	}
}

// exportTo checks an exportTo list as Istio does: ".", "*" or namespace
// names, none twice, and "*" alone.
func (v *validator) exportTo(to []string) {
	seen := map[string]bool{}
	for i, ns := range to {
		p := fmt.Sprintf("spec.exportTo[%d]", i)
		switch {
		case ns == "~":
			v.fail(p, "\"~\" (exported to no namespace) is not supported: delete the resource instead")
		case ns != "." && ns != "*" && !naming.ValidNamespace(ns):
			v.fail(p, "%s: want \".\", \"*\" or a namespace, which %s", naming.Quote(ns), naming.NamespaceRule)
		case seen[ns]:
			v.fail(p, "%s repeats an earlier entry", naming.Quote(ns))
		}
		seen[ns] = true
	}
	if seen["*"] && len(to) > 1 {
		v.fail("spec.exportTo", "\"*\" exports to every namespace and cannot be combined with other entries")
	}
}

func (v *validator) virtualService(vs *VirtualService) {
	// No hosts: a delegate VirtualService, whose routes apply only where
	// a root route delegates to it (delegate.go).
	v.delegateVS(vs)
	seenHost := map[string]int{}
	for i, h := range vs.Spec.Hosts {
		// "*" is for gateways only (Istio): a VirtualService bound to no
		// sidecar may take it.
		v.host(fmt.Sprintf("spec.hosts[%d]", i), h, !AppliesToMesh(vs.Spec.Gateways))
		if j, dup := seenHost[strings.ToLower(h)]; dup {
			v.fail(fmt.Sprintf("spec.hosts[%d]", i), "%q repeats spec.hosts[%d]: list each host once", h, j)
		}
		seenHost[strings.ToLower(h)] = i
	}
	v.exportTo(vs.Spec.ExportTo)
	v.vsGateways(vs)
	if len(vs.Spec.HTTP) == 0 && len(vs.Spec.TCP) == 0 && len(vs.Spec.TLS) == 0 {
		v.fail("spec.http", "at least one route is required")
	}
	v.l4Routes(vs)
	for i, rt := range vs.Spec.HTTP {
		v.httpRoute(fmt.Sprintf("spec.http[%d]", i), &rt)
	}
}

func (v *validator) httpRoute(p string, rt *HTTPRoute) {
	v.delegateRoute(p, rt)
	switch {
	case rt.Delegate != nil:
	case len(rt.Route) == 0 && rt.Redirect == nil && rt.DirectResponse == nil:
		v.fail(p, "needs route, redirect or directResponse")
	case len(rt.Route) > 0 && rt.Redirect != nil:
		v.fail(p, "route and redirect cannot both be set")
	}
	v.directResponse(p, rt)
	v.corsPolicy(p, rt)
	for i, m := range rt.Match {
		v.match(fmt.Sprintf("%s.match[%d]", p, i), &m)
	}
	// Weights are relative, as in Istio: they need not add up to 100, and
	// a single destination takes every request whatever its weight.
	total := int64(0)
	for i, d := range rt.Route {
		dp := fmt.Sprintf("%s.route[%d]", p, i)
		v.destination(dp+".destination", &d.Destination)
		if d.Weight != nil {
			if *d.Weight < 0 {
				v.fail(dp+".weight", "%d is negative", *d.Weight)
			} else {
				total += int64(*d.Weight)
			}
		}
		v.headers(dp+".headers", d.Headers)
		v.authorityOnce(dp, nil, d.Headers)
	}
	if len(rt.Route) > 1 && total == 0 {
		v.fail(p+".route", "the weights of its %d destinations add up to 0: no destination would get a request (an unset weight is 0)", len(rt.Route))
	}
	v.authorityOnce(p, rt.Rewrite, rt.Headers)
	if rd := rt.Redirect; rd != nil {
		if rd.URI == "" && rd.Authority == "" && rd.Scheme == "" && rd.Port == 0 && rd.DerivePort == "" {
			v.fail(p+".redirect", "set uri, authority, scheme, port or derivePort")
		}
		if rd.RedirectCode != 0 && (rd.RedirectCode < 300 || rd.RedirectCode > 399) {
			v.fail(p+".redirect.redirectCode", "%d is not a redirect status: want 3xx", rd.RedirectCode)
		}
		if rd.Scheme != "" && rd.Scheme != "http" && rd.Scheme != "https" {
			v.fail(p+".redirect.scheme", "%q: want http or https", rd.Scheme)
		}
		v.uri(p+".redirect.uri", strings.TrimPrefix(rd.URI, RedirectPrefixMarker), true, true)
		v.authority(p+".redirect.authority", rd.Authority)
		if rd.Port > 65535 {
			v.fail(p+".redirect.port", "%d is not a port", rd.Port)
		}
		switch rd.DerivePort {
		case "", DerivePortFromProtocolDefault, DerivePortFromRequestPort:
		default:
			v.fail(p+".redirect.derivePort", "%q: want %s or %s", rd.DerivePort, DerivePortFromProtocolDefault, DerivePortFromRequestPort)
		}
		if rd.Port != 0 && rd.DerivePort != "" {
			v.fail(p+".redirect", "port and derivePort cannot both be set")
		}
		if rt.Rewrite != nil {
			v.fail(p, "rewrite and redirect cannot both be set")
		}
		if rt.Fault != nil {
			v.fail(p, "fault and redirect cannot both be set")
		}
	}
	if rw := rt.Rewrite; rw != nil {
		if rw.URI == "" && rw.URIRegexRewrite == nil && rw.Authority == "" {
			v.fail(p+".rewrite", "set uri, uriRegexRewrite or authority")
		}
		if rw.URI != "" && rw.URIRegexRewrite != nil {
			v.fail(p+".rewrite", "uri and uriRegexRewrite cannot both be set")
		}
		v.uri(p+".rewrite.uri", rw.URI, false, false)
		v.regexRewrite(p+".rewrite.uriRegexRewrite", rw.URIRegexRewrite)
		v.authority(p+".rewrite.authority", rw.Authority)
	}
	v.duration(p+".timeout", rt.Timeout)
	if r := rt.Retries; r != nil {
		if r.Attempts < 0 {
			v.fail(p+".retries.attempts", "%d is negative", r.Attempts)
		}
		if r.Attempts == 0 && (r.PerTryTimeout != nil || r.RetryOn != "") {
			v.fail(p+".retries", "attempts is 0, which turns retries off, yet perTryTimeout or retryOn is set: remove them, or set attempts")
		}
		v.duration(p+".retries.perTryTimeout", r.PerTryTimeout)
		if _, err := ParseRetryOn(r.RetryOn); err != nil {
			v.fail(p+".retries.retryOn", "%v", bare{err})
		}
	}
	if f := rt.Fault; f != nil {
		if f.Delay == nil && f.Abort == nil {
			v.fail(p+".fault", "set delay or abort")
		}
		if d := f.Delay; d != nil {
			if d.FixedDelay == nil {
				v.fail(p+".fault.delay.fixedDelay", "required")
			}
			v.duration(p+".fault.delay.fixedDelay", d.FixedDelay)
			v.faultPercent(p+".fault.delay.percentage", d.Percentage)
			if d.Percent != nil && (*d.Percent < 0 || *d.Percent > 100) {
				v.fail(p+".fault.delay.percent", "%d is not between 0 and 100", *d.Percent)
			}
		}
		if a := f.Abort; a != nil {
			switch {
			case a.HTTPStatus != 0 && a.GRPCStatus != "":
				v.fail(p+".fault.abort", "httpStatus and grpcStatus cannot both be set")
			case a.GRPCStatus != "":
				if _, ok := GRPCCodes[a.GRPCStatus]; !ok {
					v.fail(p+".fault.abort.grpcStatus", "%q is not a gRPC status name", a.GRPCStatus)
				}
			case a.HTTPStatus < 200 || a.HTTPStatus > 599:
				v.fail(p+".fault.abort.httpStatus", "%d: want 200 to 599", a.HTTPStatus)
			}
			v.faultPercent(p+".fault.abort.percentage", a.Percentage)
		}
	}
	if rt.Mirror != nil {
		v.destination(p+".mirror", rt.Mirror)
	}
	if rt.MirrorPercentage != nil && rt.Mirror == nil {
		v.fail(p+".mirrorPercentage", "set without mirror")
	}
	if rt.MirrorPercent != nil && *rt.MirrorPercent > 100 {
		v.fail(p+".mirrorPercent", "%d is not between 0 and 100", *rt.MirrorPercent)
	}
	v.percent(p+".mirrorPercentage", rt.MirrorPercentage)
	v.headers(p+".headers", rt.Headers)
}

// uri checks a path that replaces the request's (rewrite.uri, or
// redirect.uri, which may carry a query): printable ASCII with no space,
// so it can never split or smuggle a request line or a Location header;
// a redirect's is absolute. A rewrite.uri need not start with "/"
// (Istio accepts it: Envoy's prefix_rewrite joins it to the rest of the
// path); the sidecar puts a "/" before a rewritten path that lacks one.
func (v *validator) uri(p, u string, query, absolute bool) {
	if u == "" {
		return
	}
	if absolute && !strings.HasPrefix(u, "/") {
		v.fail(p, "%q must start with /", u)
	}
	if i := strings.IndexFunc(u, func(c rune) bool { return c <= ' ' || c >= 0x7f || c == '#' || !query && c == '?' }); i >= 0 {
		v.fail(p, "%q: byte %d (%q) is not allowed in a path", u, i, u[i])
	}
}

// regexRewrite checks a uriRegexRewrite: the match compiles as RE2, and
// the rewrite names only groups the match has and keeps the path a path.
func (v *validator) regexRewrite(p string, rr *RegexRewrite) {
	if rr == nil {
		return
	}
	re, err := regexp.Compile(rr.Match)
	switch {
	case rr.Match == "":
		v.fail(p+".match", "required")
	case err != nil:
		v.fail(p+".match", "%v", err)
	}
	if _, groups, err := expandTemplate(rr.Rewrite); err != nil {
		v.fail(p+".rewrite", "%v", err)
	} else if re != nil && groups > re.NumSubexp() {
		v.fail(p+".rewrite", "refers to group \\%d; the match has %d", groups, re.NumSubexp())
	}
	if i := strings.IndexFunc(rr.Rewrite, func(c rune) bool { return c <= ' ' || c >= 0x7f || c == '?' || c == '#' }); i >= 0 {
		v.fail(p+".rewrite", "%q: byte %d (%q) is not allowed in a path", rr.Rewrite, i, rr.Rewrite[i])
	}
}

// authority checks a host[:port] that replaces the request's
// (rewrite.authority, redirect.authority).
func (v *validator) authority(p, a string) {
	if a == "" {
		return
	}
	host, port := a, ""
	if h, pt, err := net.SplitHostPort(a); err == nil {
		host, port = h, pt
	}
	bad := host == "" || strings.ContainsFunc(host, func(c rune) bool {
		return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == ':' || c == '_' || c == '[' || c == ']')
	})
	if n, err := strconv.Atoi(port); port != "" && (err != nil || n < 1 || n > 65535) {
		bad = true
	}
	if bad {
		v.fail(p, "%q is not a host or host:port", a)
	}
}

func (v *validator) destination(p string, d *Destination) {
	// Istio refuses an IP address, or any name whose last label is all
	// digits, as a destination host: a destination names a service.
	last := d.Host[strings.LastIndexByte(d.Host, '.')+1:]
	if net.ParseIP(strings.Trim(d.Host, "[]")) != nil || last != "" && strings.Trim(last, "0123456789") == "" {
		v.fail(p+".host", "%q is an IP address (or ends in a numeric label): a destination host names a service", d.Host)
		return
	}
	v.destinationHost(p+".host", d.Host)
	if d.Subset != "" && !naming.ValidServiceName(d.Subset) {
		v.fail(p+".subset", "%q is not a valid subset name", d.Subset)
	}
}

// duration applies Istio's rule for every duration: at least 1ms, and a
// whole number of milliseconds (Envoy keeps no finer precision).
func (v *validator) duration(p string, d *Duration) {
	switch {
	case d == nil:
	case d.Duration < time.Millisecond:
		v.fail(p, "%s is less than 1ms: durations must be at least 1ms", d.Duration)
	case d.Duration%time.Millisecond != 0:
		v.fail(p, "%s is finer than 1ms: durations are whole milliseconds", d.Duration)
	}
}

func (v *validator) percent(p string, pc *Percent) {
	if pc != nil && (pc.Value < 0 || pc.Value > 100) {
		v.fail(p+".value", "%v is not between 0 and 100", pc.Value)
	}
}

// faultPercent is Istio's rule for a fault's percentage: 0, or 0.0001 to
// 100 (Envoy's fractional percent has a millionth's resolution).
func (v *validator) faultPercent(p string, pc *Percent) {
	if pc != nil && pc.Value > 0 && pc.Value < 0.0001 {
		v.fail(p+".value", "%v is neither 0 nor between 0.0001 and 100", pc.Value)
		return
	}
	v.percent(p, pc)
}

// match checks a match. An empty prefix matches everything; Istio (and
// Envoy's StringMatcher) allow it for the uri only.
func (v *validator) match(p string, m *HTTPMatchRequest) {
	v.labels(p+".sourceLabels", m.SourceLabels)
	v.stringMatch(p+".uri", m.URI)
	v.stringMatch(p+".method", m.Method)
	v.nonEmptyPrefix(p+".method", m.Method)
	v.stringMatch(p+".authority", m.Authority)
	v.nonEmptyPrefix(p+".authority", m.Authority)
	for k, sm := range m.Headers {
		sm := sm
		v.stringMatch(p+".headers."+k, &sm)
		v.nonEmptyPrefix(p+".headers."+k, &sm)
	}
	for k, sm := range m.QueryParams {
		sm := sm
		v.stringMatch(p+".queryParams."+k, &sm)
		v.nonEmptyPrefix(p+".queryParams."+k, &sm)
	}
}

func (v *validator) nonEmptyPrefix(p string, sm *StringMatch) {
	if sm != nil && sm.Prefix != nil && *sm.Prefix == "" {
		v.fail(p+".prefix", "an empty prefix is not allowed here (it would match any value; to match presence, use regex: '.*')")
	}
}

func (v *validator) stringMatch(p string, sm *StringMatch) {
	if sm == nil {
		return
	}
	n := 0
	for _, s := range []*string{sm.Exact, sm.Prefix, sm.Regex} {
		if s != nil {
			n++
		}
	}
	if n != 1 {
		v.fail(p, "set exactly one of exact, prefix or regex")
	}
	if sm.Regex != nil {
		if _, err := regexp.Compile("^(?:" + *sm.Regex + ")$"); err != nil {
			v.fail(p+".regex", "%v", err)
		}
	}
}

func (v *validator) headers(p string, h *Headers) {
	if h == nil {
		return
	}
	for name, ops := range map[string]*HeaderOperations{"request": h.Request, "response": h.Response} {
		if ops == nil {
			continue
		}
		size := 0
		// A request's set or add may name the authority (host or
		// :authority): Envoy rewrites the authority sent upstream.
		authority := name == "request"
		for k, val := range ops.Set {
			v.headerName(p+"."+name+".set", k, authority)
			v.headerValue(p+"."+name+".set."+k, val)
			if authority && IsAuthorityHeader(k) {
				v.authority(p+"."+name+".set."+k, val)
			}
			size += len(k) + len(val) + len(": \r\n")
		}
		for k, val := range ops.Add {
			v.headerName(p+"."+name+".add", k, authority)
			v.headerValue(p+"."+name+".add."+k, val)
			if authority && IsAuthorityHeader(k) {
				v.authority(p+"."+name+".add."+k, val)
			}
			size += len(k) + len(val) + len(": \r\n")
		}
		if size > MaxHeaderOpsBytes {
			v.fail(p+"."+name, "set and add come to %d bytes of header fields, more than %d: the sidecars accept 64 KiB of request or response header fields in all (Envoy: 60 KiB), so every request on this route would fail", size, MaxHeaderOpsBytes)
		}
		for _, k := range ops.Remove {
			v.headerName(p+"."+name+".remove", k, false)
		}
	}
}

// MaxHeaderOpsBytes bounds the header fields one headers block (a route's
// or a destination's request or response operations) may set and add,
// counted as name + ": " + value + CRLF: with both blocks a request grows
// by at most 32 KiB, half of the 64 KiB of header fields a sidecar
// accepts, and the rest is the app's. A larger block would make every
// request on the route fail at the peer (431 or 503).
const MaxHeaderOpsBytes = 16 << 10

// headerValue refuses a value that is not an RFC 9110 field value
// (section 5.5: no control character but horizontal tab): a CR or LF would
// end the line, and the writer would have to alter the value.
func (v *validator) headerValue(p, val string) {
	if i := strings.IndexFunc(val, func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f }); i >= 0 {
		v.fail(p, "%q: byte %d (%q) is not allowed in a header value", val, i, val[i])
	}
}

// headerName checks a header a route sets, adds or removes. authority
// allows host and :authority (a request's set and add, as in Istio); any
// other pseudo-header, and the mesh's own X-Forwarded-Client-Cert, are
// refused.
func (v *validator) headerName(p, k string, authority bool) {
	switch {
	case IsAuthorityHeader(k) && authority:
	case IsAuthorityHeader(k):
		v.fail(p, "%q: the authority can be set (request set or add), not removed or set on a response", k)
	case k == "" || strings.ContainsAny(k, " :\t\r\n") || http.CanonicalHeaderKey(k) == "":
		v.fail(p, "%q is not a header name", k)
	case strings.EqualFold(k, "X-Forwarded-Client-Cert"):
		v.fail(p, "%q is set by the mesh and cannot be changed here", k)
	}
}

// IsAuthorityHeader reports whether a header name a route sets names the
// request's authority: "host" or ":authority", in any case (Istio's
// isAuthorityHeader).
func IsAuthorityHeader(k string) bool {
	return strings.EqualFold(k, "host") || strings.EqualFold(k, ":authority")
}

// authorityOnce refuses a route (or a route's destination) that sets the
// authority in more than one place (rewrite.authority, headers.request
// set or add), as Istio does: which would win is not obvious.
func (v *validator) authorityOnce(p string, rw *HTTPRewrite, h *Headers) {
	var where []string
	if rw != nil && rw.Authority != "" {
		where = append(where, "rewrite.authority")
	}
	if h != nil && h.Request != nil {
		for op, m := range map[string]map[string]string{"set": h.Request.Set, "add": h.Request.Add} {
			for k := range m {
				if IsAuthorityHeader(k) {
					where = append(where, "headers.request."+op+"."+k)
				}
			}
		}
	}
	if len(where) > 1 {
		sort.Strings(where)
		v.fail(p, "the authority is set more than once (%s): set it in one place", strings.Join(where, ", "))
	}
}
