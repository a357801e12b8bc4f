package review

import (
	"crypto/sha256"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/sigil-mesh/sigil/traffic"
)

// diffRoute lists the changes from route prev (nil: the route is new) to
// rt, of a VirtualService in namespace.
func diffRoute(prev, rt *traffic.HTTPRoute, namespace string) []Change {
	if prev == nil {
		prev = &traffic.HTTPRoute{}
	}
	var out []Change
	add := func(kind, what string, pct float64) {
		out = append(out, Change{Kind: kind, What: what, Percent: pct})
	}
	if w, ok := weightChanges(prev, rt, namespace); ok {
		out = append(out, Change{Kind: KindWeights, What: "weights: " + describeWeights(w), Percent: 100, Weights: w})
	}
	for _, h := range headerChanges("", prev.Headers, rt.Headers) {
		add(KindHeaders, h, 100)
	}
	oldDests := map[string]*traffic.HTTPRouteDestination{}
	for i := range prev.Route {
		oldDests[destKey(prev.Route[i].Destination)] = &prev.Route[i]
	}
	for i := range rt.Route {
		d := &rt.Route[i]
		var was *traffic.Headers
		if o := oldDests[destKey(d.Destination)]; o != nil {
			was = o.Headers
		}
		for _, h := range headerChanges("to "+destKey(d.Destination)+": ", was, d.Headers) {
			add(KindHeaders, h, 100)
		}
	}
	if a, b := describeRewrite(prev.Rewrite), describeRewrite(rt.Rewrite); a != b {
		add(KindRewrite, changed("rewrite", a, b), 100)
	}
	var oldF, newF traffic.HTTPFaultInjection
	if prev.Fault != nil {
		oldF = *prev.Fault
	}
	if rt.Fault != nil {
		newF = *rt.Fault
	}
	if a, b := describeDelay(oldF.Delay), describeDelay(newF.Delay); a != b {
		add(KindFault, changed("fault", a, b), pctOr(newF.Delay, oldF.Delay, func(d *traffic.FaultDelay) *traffic.Percent { return d.Percentage }))
	}
	if a, b := describeAbort(oldF.Abort), describeAbort(newF.Abort); a != b {
		add(KindFault, changed("fault", a, b), pctOr(newF.Abort, oldF.Abort, func(d *traffic.FaultAbort) *traffic.Percent { return d.Percentage }))
	}
	if a, b := describeMirror(prev), describeMirror(rt); a != b {
		p := percent(rt.MirrorPercentage)
		if rt.Mirror == nil {
			p = percent(prev.MirrorPercentage)
		}
		add(KindMirror, changed("mirror", a, b), p)
	}
	if a, b := describeRedirect(prev.Redirect), describeRedirect(rt.Redirect); a != b {
		add(KindRedirect, changed("redirect", a, b), 100)
	}
	if a, b := describeDirect(prev.DirectResponse), describeDirect(rt.DirectResponse); a != b {
		add(KindDirectResponse, changed("direct response", a, b), 100)
	}
	return out
}

// changed says how a feature changes, from description a to b ("" for
// none).
func changed(what, a, b string) string {
	switch {
	case a == "":
		return what + ": " + b
	case b == "":
		return what + " removed (was: " + a + ")"
	}
	return what + ": " + b + " (was: " + a + ")"
}

// percent is Istio's rule: an absent percentage means 100.
func percent(p *traffic.Percent) float64 {
	if p == nil {
		return 100
	}
	return p.Value
}

// pctOr is the percentage of the new fault, or of the old one when it
// was removed.
func pctOr[T any](n, o *T, of func(*T) *traffic.Percent) float64 {
	if n != nil {
		return percent(of(n))
	}
	if o != nil {
		return percent(of(o))
	}
	return 100
}

func fmtPct(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) + " %" }

// destKey names a destination: host, /subset, :port.
func destKey(d traffic.Destination) string {
	k := d.Host
	if d.Subset != "" {
		k += "/" + d.Subset
	}
	if d.Port != nil {
		k += ":" + strconv.FormatUint(uint64(d.Port.Number), 10)
	}
	return k
}

// weightsOf is a route's weight per destination as the sidecar reads
// them: a lone destination takes 100, an unset weight is 0.
func weightsOf(rt *traffic.HTTPRoute) map[string]int {
	out := map[string]int{}
	for _, d := range rt.Route {
		w := 0
		if d.Weight != nil {
			w = int(*d.Weight)
		}
		if len(rt.Route) == 1 {
			w = 100
		}
		out[destKey(d.Destination)] += w
	}
	return out
}

// weightChanges compares two routes' weights; ok is false when nothing
// moves, or the route no longer forwards (a redirect or direct response,
// reported on its own). A new route counts as a shift only when it splits traffic or
// names a subset (a lone destination without a subset is where requests
// went anyway).
func weightChanges(prev, rt *traffic.HTTPRoute, namespace string) ([]WeightChange, bool) {
	if len(rt.Route) == 0 {
		// A redirect or direct response: said as such.
		return nil, false
	}
	if len(prev.Route) == 0 && len(rt.Route) == 1 && rt.Route[0].Destination.Subset == "" {
		return nil, false
	}
	a, b := weightsOf(prev), weightsOf(rt)
	subsets := map[string]traffic.Destination{}
	for _, d := range append(append([]traffic.HTTPRouteDestination(nil), prev.Route...), rt.Route...) {
		subsets[destKey(d.Destination)] = d.Destination
	}
	var out []WeightChange
	moved := false
	for k, d := range subsets {
		o, ok := a[k]
		if !ok {
			o = -1
		}
		n, ok := b[k]
		if !ok {
			n = -1
		}
		if o != n {
			moved = true
		}
		s := traffic.ServiceOf(d.Host, namespace)
		out = append(out, WeightChange{Destination: k, Service: Service{Namespace: s.Namespace, Name: s.Name}, Subset: d.Subset, Old: o, New: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Destination < out[j].Destination })
	return out, moved
}

func describeWeights(ws []WeightChange) string {
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = w.Destination + " " + weight(w.Old) + " → " + weight(w.New)
	}
	return strings.Join(parts, ", ")
}

func weight(w int) string {
	if w < 0 {
		return "none"
	}
	return strconv.Itoa(w)
}

// headerChanges lists what changes in the header operations from old to
// new, each prefixed with prefix. Header names compare without case.
func headerChanges(prefix string, old, new *traffic.Headers) []string {
	var out []string
	for _, side := range []string{"request", "response"} {
		o, n := headerOps(old, side), headerOps(new, side)
		was, is := lowerSet(o.Remove), lowerSet(n.Remove)
		for _, h := range sortedKeys(is) {
			if !was[h] {
				out = append(out, fmt.Sprintf("%s%s header %s removed", prefix, side, h))
			}
		}
		for _, h := range sortedKeys(was) {
			if !is[h] {
				out = append(out, fmt.Sprintf("%s%s header %s no longer removed", prefix, side, h))
			}
		}
		out = append(out, valueChanges(prefix+side+" header ", "set to", lowerMap(o.Set), lowerMap(n.Set))...)
		out = append(out, valueChanges(prefix+side+" header ", "added with", lowerMap(o.Add), lowerMap(n.Add))...)
	}
	return out
}

func valueChanges(prefix, verb string, was, is map[string]string) []string {
	var out []string
	for _, h := range sortedKeys(is) {
		v, ok := was[h]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s%s %s %q", prefix, h, verb, is[h]))
		case v != is[h]:
			out = append(out, fmt.Sprintf("%s%s %s %q (was %q)", prefix, h, verb, is[h], v))
		}
	}
	for _, h := range sortedKeys(was) {
		if _, ok := is[h]; !ok {
			out = append(out, fmt.Sprintf("%s%s no longer %s %q", prefix, h, verb, was[h]))
		}
	}
	return out
}

func headerOps(h *traffic.Headers, side string) traffic.HeaderOperations {
	if h == nil {
		return traffic.HeaderOperations{}
	}
	ops := h.Request
	if side == "response" {
		ops = h.Response
	}
	if ops == nil {
		return traffic.HeaderOperations{}
	}
	return *ops
}

func lowerSet(names []string) map[string]bool {
	out := map[string]bool{}
	for _, n := range names {
		out[strings.ToLower(n)] = true
	}
	return out
}

func lowerMap(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func describeRewrite(rw *traffic.HTTPRewrite) string {
	if rw == nil {
		return ""
	}
	var parts []string
	if rw.URI != "" {
		parts = append(parts, fmt.Sprintf("matched path prefix rewritten to %q", rw.URI))
	}
	if r := rw.URIRegexRewrite; r != nil {
		parts = append(parts, fmt.Sprintf("path matching %q rewritten to %q", r.Match, r.Rewrite))
	}
	if rw.Authority != "" {
		parts = append(parts, fmt.Sprintf("authority rewritten to %q", rw.Authority))
	}
	return strings.Join(parts, ", ")
}

func describeDelay(d *traffic.FaultDelay) string {
	if d == nil {
		return ""
	}
	fixed := "0s"
	if d.FixedDelay != nil {
		fixed = d.FixedDelay.String()
	}
	return fmt.Sprintf("delay %s for %s of requests", fixed, fmtPct(percent(d.Percentage)))
}

func describeAbort(a *traffic.FaultAbort) string {
	if a == nil {
		return ""
	}
	status := fmt.Sprintf("HTTP %d", a.HTTPStatus)
	if a.GRPCStatus != "" {
		status = "gRPC " + a.GRPCStatus
	}
	return fmt.Sprintf("abort with %s for %s of requests", status, fmtPct(percent(a.Percentage)))
}

func describeMirror(rt *traffic.HTTPRoute) string {
	if rt.Mirror == nil {
		return ""
	}
	return fmt.Sprintf("copy %s of requests to %s", fmtPct(percent(rt.MirrorPercentage)), destKey(*rt.Mirror))
}

func describeRedirect(r *traffic.HTTPRedirect) string {
	if r == nil {
		return ""
	}
	var parts []string
	for _, f := range []struct{ name, v string }{{"uri", r.URI}, {"authority", r.Authority}, {"scheme", r.Scheme}, {"derivePort", r.DerivePort}} {
		if f.v != "" {
			parts = append(parts, fmt.Sprintf("%s %q", f.name, f.v))
		}
	}
	if r.Port != 0 {
		parts = append(parts, fmt.Sprintf("port %d", r.Port))
	}
	code := r.RedirectCode
	if code == 0 {
		code = 301
	}
	return fmt.Sprintf("answer %d redirecting to %s", code, strings.Join(parts, ", "))
}

func describeDirect(d *traffic.HTTPDirectResponse) string {
	if d == nil {
		return ""
	}
	body := ""
	switch {
	case d.Body == nil:
	case d.Body.String != nil:
		b := *d.Body.String
		if len(b) > 40 {
			sum := sha256.Sum256([]byte(b))
			b = fmt.Sprintf("%s... (%d bytes, sha256 %x)", b[:40], len(b), sum[:6])
		}
		body = fmt.Sprintf(" with body %q", b)
	case d.Body.Bytes != nil:
		sum := sha256.Sum256(*d.Body.Bytes)
		body = fmt.Sprintf(" with a body of %d bytes (sha256 %x)", len(*d.Body.Bytes), sum[:6])
	}
	return fmt.Sprintf("answer %d at the sidecar%s, never reaching the app", d.Status, body)
}

func tcpRoutes(rs []traffic.TCPRoute) [][]traffic.RouteDestination {
	out := make([][]traffic.RouteDestination, len(rs))
	for i := range rs {
		out[i] = rs[i].Route
	}
	return out
}

func tlsRoutes(rs []traffic.TLSRoute) [][]traffic.RouteDestination {
	out := make([][]traffic.RouteDestination, len(rs))
	for i := range rs {
		out[i] = rs[i].Route
	}
	return out
}

// diffL4 lists the weight shifts of a VirtualService's tcp or tls routes
// (proto), route i of the old set against route i of the new, and the
// routes removed. Their traffic is TCP connections.
func diffL4(ref string, svcs []Service, proto string, old, new [][]traffic.RouteDestination, namespace string) []Change {
	asHTTP := func(ds []traffic.RouteDestination) *traffic.HTTPRoute {
		rt := &traffic.HTTPRoute{}
		for _, d := range ds {
			rt.Route = append(rt.Route, traffic.HTTPRouteDestination{Destination: d.Destination, Weight: d.Weight})
		}
		return rt
	}
	var out []Change
	for i, ds := range new {
		prev := &traffic.HTTPRoute{}
		if i < len(old) {
			prev = asHTTP(old[i])
		}
		if w, ok := weightChanges(prev, asHTTP(ds), namespace); ok {
			out = append(out, Change{Resource: ref, Services: svcs, Route: fmt.Sprintf("%s[%d]", proto, i), Kind: KindWeights,
				WholeService: len(new) == 1, Connections: true, Percent: 100, Weights: w, What: "weights: " + describeWeights(w)})
		}
	}
	for i := len(new); i < len(old); i++ {
		out = append(out, Change{Resource: ref, Services: svcs, Route: fmt.Sprintf("%s[%d]", proto, i), Kind: KindRouteRemoved,
			WholeService: len(old) == 1, Connections: true, Percent: 100,
			What: "route removed: its connections fall to the next route that matches (or the default route)"})
	}
	return out
}
