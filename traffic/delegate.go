package traffic

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sigil-mesh/sigil/naming"
)

// Delegate is Istio's HTTPRoute delegate: the route's matches are shared
// by the http routes of another VirtualService (the delegate: one with no
// hosts), which take its place, one level only.
type Delegate struct {
	// Name is the delegate VirtualService's metadata.name (required).
	Name string `json:"name"`
	// Namespace is its namespace; empty: the root VirtualService's.
	Namespace string `json:"namespace,omitempty"`
}

// IsDelegate reports whether vs is a delegate VirtualService: one with no
// hosts, whose http routes apply only where a root route delegates to it.
func IsDelegate(vs *VirtualService) bool { return len(vs.Spec.Hosts) == 0 }

// delegateVS checks what Istio's validation asks of a delegate
// VirtualService: no gateways, no tcp or tls routes (only http routes are
// delegated), and no route of its own delegating further.
func (v *validator) delegateVS(vs *VirtualService) {
	if !IsDelegate(vs) {
		return
	}
	if len(vs.Spec.Gateways) > 0 {
		v.fail("spec.gateways", "a delegate VirtualService (one with no hosts) must have no gateways: the root VirtualService's apply")
	}
	if len(vs.Spec.TCP) > 0 {
		v.fail("spec.tcp", "a delegate VirtualService (one with no hosts) must have no tcp routes: only http routes are delegated")
	}
	if len(vs.Spec.TLS) > 0 {
		v.fail("spec.tls", "a delegate VirtualService (one with no hosts) must have no tls routes: only http routes are delegated")
	}
	for i, rt := range vs.Spec.HTTP {
		if rt.Delegate != nil {
			v.fail(fmt.Sprintf("spec.http[%d].delegate", i), "a delegate VirtualService's route cannot delegate again: delegation is one level only")
		}
	}
}

// delegateRoute checks a root route (one with delegate) as Istio does: a
// name for the delegate and no route or redirect beside it. Sigil also
// refuses a directResponse beside it, which Istio would copy into every
// delegated route, beside their own destinations (a combination Istio
// itself refuses in any one route), and a namespace that is not one.
func (v *validator) delegateRoute(p string, rt *HTTPRoute) {
	d := rt.Delegate
	if d == nil {
		return
	}
	p += ".delegate"
	if !naming.ValidName(d.Name) {
		v.fail(p+".name", "%s: want the name of a VirtualService (%s)", naming.Quote(d.Name), naming.NameRule)
	}
	if d.Namespace != "" && !naming.ValidNamespace(d.Namespace) {
		v.fail(p+".namespace", "%s %s", naming.Quote(d.Namespace), naming.NamespaceRule)
	}
	for name, set := range map[string]bool{"route": len(rt.Route) > 0, "redirect": rt.Redirect != nil, "directResponse": rt.DirectResponse != nil} {
		if set {
			v.fail(p, "a route with delegate must not have %s: the delegate VirtualService's routes say where requests go", name)
		}
	}
}

// withDelegates returns all with every VirtualService that delegates
// replaced by a copy whose delegating routes are merged with the routes
// of their delegates, as Istio merges them: each delegate route takes the
// root route's place, its matches narrowed to those of the root (a
// delegate match that conflicts with every root match drops the route),
// and the root's rewrite, timeout, retries, fault, mirror, corsPolicy and
// headers fill in what the delegate route leaves unset. A delegate is a
// VirtualService with no hosts, in the namespace the route names (else
// the root's), exported to the root's namespace; a route whose delegate
// is missing is left out, as Istio leaves it out (UndefinedDelegates
// lists them). Host names in a delegate resolve in its own namespace.
func withDelegates(all []Resource) []Resource {
	delegates := map[string]*Resource{}
	roots := false
	for i, r := range all {
		if r.VS == nil {
			continue
		}
		if IsDelegate(r.VS) {
			delegates[r.Namespace+"/"+r.Name] = &all[i]
		}
		roots = roots || hasDelegateRoute(r.VS)
	}
	if !roots {
		return all
	}
	out := make([]Resource, 0, len(all))
	for _, r := range all {
		if r.VS == nil || IsDelegate(r.VS) || !hasDelegateRoute(r.VS) {
			out = append(out, r)
			continue
		}
		vs := *r.VS
		vs.Spec.HTTP = nil
		for _, rt := range r.VS.Spec.HTTP {
			if rt.Delegate == nil {
				vs.Spec.HTTP = append(vs.Spec.HTTP, rt)
				continue
			}
			d := delegateOf(delegates, r, rt.Delegate)
			if d == nil {
				continue
			}
			for _, sub := range d.VS.Spec.HTTP {
				if merged, ok := mergeRoute(rt, qualified(sub, d.Namespace)); ok {
					vs.Spec.HTTP = append(vs.Spec.HTTP, merged)
				}
			}
		}
		r.VS = &vs
		out = append(out, r)
	}
	return out
}

func hasDelegateRoute(vs *VirtualService) bool {
	for _, rt := range vs.Spec.HTTP {
		if rt.Delegate != nil {
			return true
		}
	}
	return false
}

// delegateOf finds root's delegate d among delegates, nil when there is
// none that root's namespace may see.
func delegateOf(delegates map[string]*Resource, root Resource, d *Delegate) *Resource {
	ns := d.Namespace
	if ns == "" {
		ns = root.Namespace
	}
	r := delegates[ns+"/"+d.Name]
	if r == nil || !r.Visible(root.Namespace) {
		return nil
	}
	return r
}

// UndefinedDelegate is a root route whose delegate VirtualService does not
// exist, or is not exported to the root's namespace: the route is left
// out until it does.
type UndefinedDelegate struct {
	Source string // the root VirtualService, as Resource.Ref names it
	Path   string // the field: spec.http[0].delegate
	Name   string // the delegate, namespace/name
}

// String is the warning shown to the user.
func (u UndefinedDelegate) String() string {
	return fmt.Sprintf("%s: %s: VirtualService %s is not a delegate VirtualService (one with no hosts) exported to this namespace: the route is left out until it is", u.Source, u.Path, u.Name)
}

// UndefinedDelegates lists the routes of all that delegate to a
// VirtualService withDelegates cannot find. Istio accepts them and leaves
// the route out; so does Sigil, with a warning.
func UndefinedDelegates(all []Resource) []UndefinedDelegate {
	delegates := map[string]*Resource{}
	for i, r := range all {
		if r.VS != nil && IsDelegate(r.VS) {
			delegates[r.Namespace+"/"+r.Name] = &all[i]
		}
	}
	var out []UndefinedDelegate
	for _, r := range all {
		if r.VS == nil || IsDelegate(r.VS) {
			continue
		}
		for i, rt := range r.VS.Spec.HTTP {
			if rt.Delegate != nil && delegateOf(delegates, r, rt.Delegate) == nil {
				ns := rt.Delegate.Namespace
				if ns == "" {
					ns = r.Namespace
				}
				out = append(out, UndefinedDelegate{Source: r.Ref(), Path: fmt.Sprintf("spec.http[%d].delegate", i), Name: ns + "/" + rt.Delegate.Name})
			}
		}
	}
	return out
}

// qualified is a delegate route with its destinations' and mirror's
// service hosts written in full (name.ns.svc.cluster.local), so that they
// mean in the root VirtualService what they mean in the delegate's
// namespace (Istio resolves a delegate's short names in its namespace).
func qualified(rt HTTPRoute, namespace string) HTTPRoute {
	full := func(host string) string {
		if svc := ServiceOf(host, namespace); !svc.IsZero() {
			return naming.Resolver{}.FQDN(svc)
		}
		return host
	}
	rt.Route = append([]HTTPRouteDestination(nil), rt.Route...)
	for i := range rt.Route {
		rt.Route[i].Destination.Host = full(rt.Route[i].Destination.Host)
	}
	if rt.Mirror != nil {
		m := *rt.Mirror
		m.Host = full(m.Host)
		rt.Mirror = &m
	}
	return rt
}

// mergeRoute merges a root route with one of its delegate's routes
// (Istio's mergeHTTPRoute); false when their matches conflict.
func mergeRoute(root, sub HTTPRoute) (HTTPRoute, bool) {
	matches, ok := mergeMatches(root.Match, sub.Match)
	if !ok {
		return HTTPRoute{}, false
	}
	sub.Match = matches
	sub.Name = joinName(root.Name, sub.Name)
	if sub.Rewrite == nil {
		sub.Rewrite = root.Rewrite
	}
	if sub.Timeout == nil {
		sub.Timeout = root.Timeout
	}
	if sub.Retries == nil {
		sub.Retries = root.Retries
	}
	if sub.Fault == nil {
		sub.Fault = root.Fault
	}
	if sub.Mirror == nil {
		sub.Mirror = root.Mirror
	}
	if sub.MirrorPercentage == nil {
		sub.MirrorPercentage = root.MirrorPercentage
	}
	if sub.CorsPolicy == nil {
		sub.CorsPolicy = root.CorsPolicy
	}
	if sub.Headers == nil {
		sub.Headers = root.Headers
	}
	return sub, true
}

// mergeMatches narrows each delegate match by every root match it does
// not conflict with (Istio's mergeHTTPMatchRequests): no root matches,
// the delegate's; no delegate matches, the root's; false when some
// delegate match conflicts with every root match.
func mergeMatches(root, sub []HTTPMatchRequest) ([]HTTPMatchRequest, bool) {
	if len(root) == 0 {
		return sub, true
	}
	if len(sub) == 0 {
		return root, true
	}
	var out []HTTPMatchRequest
	for _, s := range sub {
		found := false
		for _, r := range root {
			if matchConflict(r, s) {
				continue
			}
			out = append(out, mergeMatch(r, s))
			found = true
		}
		if !found {
			return nil, false
		}
	}
	return out, len(out) > 0
}

// mergeMatch is a delegate match with what it leaves unset taken from the
// root match, and maps merged (the delegate's entries win).
func mergeMatch(root, sub HTTPMatchRequest) HTTPMatchRequest {
	sub.Name = joinName(root.Name, sub.Name)
	if sub.URI == nil {
		sub.URI = root.URI
	}
	if sub.Method == nil {
		sub.Method = root.Method
	}
	if sub.Authority == nil {
		sub.Authority = root.Authority
	}
	sub.Headers = mergeMaps(root.Headers, sub.Headers)
	sub.QueryParams = mergeMaps(root.QueryParams, sub.QueryParams)
	sub.SourceLabels = mergeMaps(root.SourceLabels, sub.SourceLabels)
	if sub.Port == 0 {
		sub.Port = root.Port
	}
	if len(sub.Gateways) == 0 {
		sub.Gateways = root.Gateways
	}
	return sub
}

// joinName names a merged route or match as Istio does: "root-sub", or
// whichever of the two is set.
func joinName(root, sub string) string {
	switch {
	case sub == "":
		return root
	case root == "":
		return sub
	}
	return root + "-" + sub
}

func mergeMaps[V any](root, sub map[string]V) map[string]V {
	if len(root) == 0 && len(sub) == 0 {
		return nil
	}
	out := maps.Clone(root)
	if out == nil {
		out = map[string]V{}
	}
	maps.Copy(out, sub)
	return out
}

// matchConflict reports whether a delegate match asks for what its root
// match cannot give (Istio's hasConflict): a uri, method, authority,
// header or query parameter outside the root's; another ignoreUriCase;
// another port; a source label of another value; gateways the root's
// do not include.
func matchConflict(root, sub HTTPMatchRequest) bool {
	if stringConflict(root.URI, sub.URI) || stringConflict(root.Method, sub.Method) || stringConflict(root.Authority, sub.Authority) {
		return true
	}
	for k, s := range sub.Headers {
		if r, ok := root.Headers[k]; ok && stringConflict(&r, &s) {
			return true
		}
	}
	for k, s := range sub.QueryParams {
		if r, ok := root.QueryParams[k]; ok && stringConflict(&r, &s) {
			return true
		}
	}
	if root.IgnoreURICase != sub.IgnoreURICase || root.Port > 0 && sub.Port > 0 && root.Port != sub.Port {
		return true
	}
	for k, s := range sub.SourceLabels {
		if r, ok := root.SourceLabels[k]; ok && r != s {
			return true
		}
	}
	if len(root.Gateways) > 0 && len(sub.Gateways) > 0 {
		for _, g := range sub.Gateways {
			if !slices.Contains(root.Gateways, g) {
				return true
			}
		}
	}
	return false
}

// stringConflict is Istio's stringMatchConflict: none when either is
// unset; a regex on one side conflicts with anything on the other; under
// a root exact, only the same exact; under a root prefix, an exact or a
// prefix that starts with it. Anything else (an empty root prefix
// included, as in Istio) conflicts.
func stringConflict(root, sub *StringMatch) bool {
	if root == nil || sub == nil {
		return false
	}
	nonEmpty := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	rExact, rPrefix, rRegex := nonEmpty(root.Exact), nonEmpty(root.Prefix), nonEmpty(root.Regex)
	sExact, sPrefix, sRegex := nonEmpty(sub.Exact), nonEmpty(sub.Prefix), nonEmpty(sub.Regex)
	switch {
	case rRegex != "" || sRegex != "":
		return true
	case rExact != "":
		return sPrefix != "" || sExact != rExact
	case rPrefix != "" && sPrefix != "":
		return !strings.HasPrefix(sPrefix, rPrefix)
	case rPrefix != "" && sExact != "":
		return !strings.HasPrefix(sExact, rPrefix)
	}
	return true
}
