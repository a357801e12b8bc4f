package traffic

import (
	"fmt"
	"slices"
)

// UnreachableOutside is a route's (or mirror's) destination outside the
// mesh that no DestinationRule says how to reach: the sidecar answers
// 502 for requests routed there, and closes connections (proxy's
// sendOutside, openOutside). Only hosts a DestinationRule names are
// reachable from the mesh (tls DISABLE, SIMPLE or MUTUAL).
type UnreachableOutside struct {
	Source string // the VirtualService, as Resource.Ref names it
	Path   string // the field: spec.http[0].route[1].destination.host
	Host   string // the destination's host, lower case (HostOfKey of its HostKey)
	Port   uint32 // its port.number, 0 when unset
}

// String is the warning shown to the user.
func (u UnreachableOutside) String() string {
	at := ""
	if u.Port != 0 {
		at = fmt.Sprintf(" on port %d", u.Port)
	}
	return fmt.Sprintf("%s: %s: %s is outside the mesh and no DestinationRule says how to reach it%s: requests routed there get 502 until a DestinationRule for host %s sets trafficPolicy.tls.mode DISABLE, SIMPLE or MUTUAL", u.Source, u.Path, u.Host, at, u.Host)
}

// UnreachableOutsideHosts lists the destinations outside the mesh of the
// routes and mirrors of all's VirtualServices that apply at sidecars,
// that no DestinationRule of all says how to reach (at the destination's
// port when it names one). Such a route is accepted, as Istio accepts a
// route to a host no ServiceEntry declares, and warned of.
func UnreachableOutsideHosts(all []Resource) []UnreachableOutside {
	t := Compile(0, all)
	var out []UnreachableOutside
	for _, r := range all {
		if r.VS == nil || !AppliesToMesh(r.VS.Spec.Gateways) {
			continue
		}
		eachDestination(r.VS, func(path string, d *Destination) {
			if !ServiceOf(d.Host, r.Namespace).IsZero() {
				return
			}
			key, wild, ok := HostKey(d.Host, r.Namespace)
			if !ok || wild {
				return // Validate refused it
			}
			host, port := HostOfKey(key), portNumber(d.Port)
			if port != 0 {
				if _, ok := t.ExternalRule(host, port); ok {
					return
				}
			} else if t.more.external != nil {
				if _, ok := t.more.external.lookup(host); ok {
					return
				}
			}
			out = append(out, UnreachableOutside{Source: r.Ref(), Path: path + ".host", Host: host, Port: port})
		})
	}
	return out
}

// HostLabel is the metric label of host, a host outside the mesh (lower
// case): the host as a VirtualService or DestinationRule names it, which
// is host itself or the most specific wildcard covering it ("*.example.com"
// for a.example.com, as Istio labels a wildcard ServiceEntry's traffic).
// A host no resource names is returned as it is. Labels thus come from
// configuration, never from a name the app chose.
//
// host may be given as the name or as its key (OutsideKey); the label is
// a name, without OutsideKey's trailing dot.
func (t *Table) HostLabel(host string) string {
	host = HostOfKey(host)
	if t == nil {
		return host
	}
	best, bestSpec := host, -1
	key := OutsideKey(host)
	for _, w := range []func(string) (string, int, bool){t.routes.written, t.more.tcp.written, t.more.tls.written} {
		if h, spec, ok := w(key); ok && spec > bestSpec {
			best, bestSpec = h, spec
		}
	}
	if h, spec, ok := t.more.external.written(host); ok && spec > bestSpec {
		best = h
	}
	return HostOfKey(best)
}

// eachDestination calls f with the path and the destination of every
// route and mirror of vs that can apply at a sidecar (a route whose
// matches all name gateways other than the mesh never does).
func eachDestination(vs *VirtualService, f func(path string, d *Destination)) {
	for i, h := range vs.Spec.HTTP {
		if !slices.ContainsFunc(h.Match, func(m HTTPMatchRequest) bool { return matchAtSidecar(m.Gateways) }) && len(h.Match) > 0 {
			continue
		}
		for j := range h.Route {
			f(fmt.Sprintf("spec.http[%d].route[%d].destination", i, j), &h.Route[j].Destination)
		}
		if h.Mirror != nil {
			f(fmt.Sprintf("spec.http[%d].mirror", i), h.Mirror)
		}
	}
	for i, tr := range vs.Spec.TCP {
		if !slices.ContainsFunc(tr.Match, func(m L4MatchAttributes) bool { return matchAtSidecar(m.Gateways) }) && len(tr.Match) > 0 {
			continue
		}
		for j := range tr.Route {
			f(fmt.Sprintf("spec.tcp[%d].route[%d].destination", i, j), &tr.Route[j].Destination)
		}
	}
	for i, tr := range vs.Spec.TLS {
		if !slices.ContainsFunc(tr.Match, func(m TLSMatchAttributes) bool { return matchAtSidecar(m.Gateways) }) {
			continue
		}
		for j := range tr.Route {
			f(fmt.Sprintf("spec.tls[%d].route[%d].destination", i, j), &tr.Route[j].Destination)
		}
	}
}

// matchAtSidecar reports whether a match with these gateways can apply at
// a sidecar: it names none (the VirtualService's apply) or the mesh.
func matchAtSidecar(gateways []string) bool {
	return len(gateways) == 0 || slices.Contains(gateways, MeshGateway)
}
