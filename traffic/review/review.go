// Package review lists what a configuration change does to requests on
// the wire, for `sigil apply --dry-run --review`: every change between the
// VirtualServices and DestinationRules in force and those proposed that
// rewrites or removes headers, rewrites paths, injects faults, mirrors,
// redirects or answers directly, or shifts weights, and every removed
// resource, route or subset. Each change names the service and route it
// acts on, so that Figures (from the server's stats window) can say how
// much of today's traffic it would touch.
//
//	changes := review.Diff(inForce, proposed)
//	review.Markdown(os.Stdout, changes, figures)
package review

import (
	"cmp"
	"fmt"
	"maps"
	"sort"
	"strings"

	"github.com/sigil-mesh/sigil/traffic"
)

// Kinds of change (Change.Kind).
const (
	KindWeights        = "weights"
	KindHeaders        = "headers"
	KindRewrite        = "rewrite"
	KindFault          = "fault"
	KindMirror         = "mirror"
	KindRedirect       = "redirect"
	KindDirectResponse = "directResponse"
	// KindRouteRemoved is an HTTP route the proposed VirtualService no
	// longer has: its requests fall to the next route that matches.
	KindRouteRemoved = "route removed"
	// KindRemoved is a whole VirtualService or DestinationRule removed.
	KindRemoved = "removed"
	// KindSubsetRemoved is a DestinationRule subset removed: routes to it
	// answer 503.
	KindSubsetRemoved = "subset removed"
	// KindSubsetLabels is a subset that selects other endpoints: its
	// traffic goes elsewhere.
	KindSubsetLabels = "subset labels"
)

// Change is one change to what happens to requests.
type Change struct {
	// Resource names the resource ("VirtualService default/api").
	Resource string
	// Services are the mesh services the resource's hosts name, whose
	// traffic the change touches.
	Services []Service
	// Route is the HTTP route ("http[0]", with its name if it has one);
	// "" for a change to a whole resource or a subset.
	Route string
	// RouteName is the route's name ("" when unnamed), as the stats'
	// route rows name it.
	RouteName string
	// WholeService: the route takes every request of the services (it is
	// the resource's only HTTP route, or its first and without a match),
	// or the change is to the whole resource.
	WholeService bool
	// Subset is the subset a KindSubsetRemoved or KindSubsetLabels change
	// is about.
	Subset string
	// Connections: the change is to a tcp or tls route, whose traffic is
	// counted in TCP connections, not requests.
	Connections bool
	Kind        string
	// What says what changes, in words ("request header x-debug removed").
	What string
	// Percent is the share of the route's requests the change applies to
	// (a fault's or a mirror's percentage); 100 for the others.
	Percent float64
	// Weights are a KindWeights change's destinations.
	Weights []WeightChange
}

// Service is a mesh service by namespace and name.
type Service struct {
	Namespace, Name string
}

func (s Service) String() string { return s.Name + "." + s.Namespace }

// WeightChange is one destination of a weight shift. Old or New is -1
// where the destination is not in that version of the route.
type WeightChange struct {
	Destination string // host, with "/subset" when one is named
	Service     Service
	Subset      string
	Old, New    int
}

// Diff returns the changes from the resources in force (old) to the
// proposed set (new), both whole configurations: a resource in old and
// not in new was removed. They come sorted by resource, route and kind.
func Diff(old, new []traffic.Resource) []Change {
	// Policy resources change no traffic: the review of traffic leaves
	// them out (a Policy's own checks run at apply).
	old, new = trafficOnly(old), trafficOnly(new)
	roots := delegateRoots(old, new)
	was := map[string]traffic.Resource{}
	for _, r := range old {
		was[r.Key()] = r
	}
	is := map[string]bool{}
	var out []Change
	for _, r := range new {
		is[r.Key()] = true
		prev, ok := was[r.Key()]
		switch {
		case r.VS != nil:
			var o *traffic.VirtualService
			if ok {
				o = prev.VS
			}
			out = append(out, diffVS(r, o, roots)...)
		case r.DR != nil && ok:
			out = append(out, diffDR(r, prev.DR)...)
		}
	}
	for _, r := range old {
		if is[r.Key()] {
			continue
		}
		c := Change{Resource: r.Ref(), Services: servicesOf(r, roots), WholeService: true, Kind: KindRemoved, Percent: 100}
		if r.VS != nil {
			c.What = fmt.Sprintf("VirtualService removed: its %d HTTP routes no longer apply; requests to %s take the default route (every endpoint, no subsets)", len(r.VS.Spec.HTTP), strings.Join(r.VS.Spec.Hosts, ", "))
		} else {
			c.What = fmt.Sprintf("DestinationRule removed: host %s loses its traffic policy and subsets; routes to its subsets answer 503", r.DR.Spec.Host)
		}
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Resource != out[j].Resource {
			return out[i].Resource < out[j].Resource
		}
		return out[i].Route < out[j].Route
	})
	return out
}

// trafficOnly returns the VirtualServices and DestinationRules of rs.
func trafficOnly(rs []traffic.Resource) []traffic.Resource {
	out := make([]traffic.Resource, 0, len(rs))
	for _, r := range rs {
		if r.VS != nil || r.DR != nil {
			out = append(out, r)
		}
	}
	return out
}

// services lists the mesh services a resource's hosts name.
func services(r traffic.Resource) []Service {
	var hosts []string
	if r.VS != nil {
		hosts = r.VS.Spec.Hosts
	} else {
		hosts = []string{r.DR.Spec.Host}
	}
	var out []Service
	seen := map[Service]bool{}
	for _, h := range hosts {
		s := traffic.ServiceOf(h, r.Namespace)
		if s.IsZero() {
			continue
		}
		sv := Service{Namespace: s.Namespace, Name: s.Name}
		if !seen[sv] {
			seen[sv] = true
			out = append(out, sv)
		}
	}
	return out
}

// delegateRoots maps each delegate VirtualService (namespace/name) to
// the services of the root VirtualServices that delegate to it, in
// either set: a delegate has no hosts of its own.
func delegateRoots(sets ...[]traffic.Resource) map[string][]Service {
	out := map[string][]Service{}
	seen := map[string]bool{}
	for _, set := range sets {
		for _, r := range set {
			if r.VS == nil || traffic.IsDelegate(r.VS) {
				continue
			}
			for _, rt := range r.VS.Spec.HTTP {
				if rt.Delegate == nil {
					continue
				}
				key := cmp.Or(rt.Delegate.Namespace, r.Namespace) + "/" + rt.Delegate.Name
				for _, s := range services(r) {
					if k := key + "|" + s.String(); !seen[k] {
						seen[k] = true
						out[key] = append(out[key], s)
					}
				}
			}
		}
	}
	return out
}

// servicesOf is services, or for a delegate VirtualService the services
// of its roots.
func servicesOf(r traffic.Resource, roots map[string][]Service) []Service {
	if r.VS != nil && traffic.IsDelegate(r.VS) {
		return roots[r.Namespace+"/"+r.Name]
	}
	return services(r)
}

// routeLabel names route i of a VirtualService.
func routeLabel(i int, rt *traffic.HTTPRoute) string {
	if rt.Name != "" {
		return fmt.Sprintf("http[%d] %s", i, rt.Name)
	}
	return fmt.Sprintf("http[%d]", i)
}

// pairRoutes pairs each proposed route with the route in force it
// replaces: the one of the same name; unnamed routes pair in order, the
// k-th unnamed proposed route with the k-th unnamed route in force. Old
// routes left over were removed.
func pairRoutes(old, new []traffic.HTTPRoute) (pair []int, removed []int) {
	pair = make([]int, len(new))
	used := make([]bool, len(old))
	byName := map[string]int{}
	var unnamed []int
	for i, rt := range old {
		if rt.Name != "" {
			byName[rt.Name] = i
		} else {
			unnamed = append(unnamed, i)
		}
	}
	for i, rt := range new {
		pair[i] = -1
		if rt.Name != "" {
			if j, ok := byName[rt.Name]; ok {
				pair[i], used[j] = j, true
			}
			continue
		}
		if len(unnamed) > 0 {
			pair[i], used[unnamed[0]] = unnamed[0], true
			unnamed = unnamed[1:]
		}
	}
	for j := range old {
		if !used[j] {
			removed = append(removed, j)
		}
	}
	return pair, removed
}

func diffVS(r traffic.Resource, old *traffic.VirtualService, roots map[string][]Service) []Change {
	svcs := servicesOf(r, roots)
	delegate := traffic.IsDelegate(r.VS)
	var oldRoutes []traffic.HTTPRoute
	if old != nil {
		oldRoutes = old.Spec.HTTP
	}
	newRoutes := r.VS.Spec.HTTP
	pair, removed := pairRoutes(oldRoutes, newRoutes)
	var out []Change
	for i := range newRoutes {
		rt := &newRoutes[i]
		var prev *traffic.HTTPRoute
		if pair[i] >= 0 {
			prev = &oldRoutes[pair[i]]
		}
		base := Change{Resource: r.Ref(), Services: svcs, Route: routeLabel(i, rt), RouteName: rt.Name,
			WholeService: !delegate && wholeService(newRoutes, i), Percent: 100}
		for _, c := range diffRoute(prev, rt, r.Namespace) {
			c.Resource, c.Services, c.Route, c.RouteName, c.WholeService = base.Resource, base.Services, base.Route, base.RouteName, base.WholeService
			out = append(out, c)
		}
	}
	for _, j := range removed {
		rt := &oldRoutes[j]
		out = append(out, Change{Resource: r.Ref(), Services: svcs, Route: routeLabel(j, rt), RouteName: rt.Name,
			WholeService: !delegate && wholeService(oldRoutes, j), Kind: KindRouteRemoved, Percent: 100,
			What: "route removed: its requests fall to the next route that matches (or the default route)"})
	}
	var oldTCP, oldTLS [][]traffic.RouteDestination
	if old != nil {
		oldTCP, oldTLS = tcpRoutes(old.Spec.TCP), tlsRoutes(old.Spec.TLS)
	}
	out = append(out, diffL4(r.Ref(), svcs, "tcp", oldTCP, tcpRoutes(r.VS.Spec.TCP), r.Namespace)...)
	out = append(out, diffL4(r.Ref(), svcs, "tls", oldTLS, tlsRoutes(r.VS.Spec.TLS), r.Namespace)...)
	return out
}

// wholeService reports whether route i takes every request: it is the
// only route, or the first and matches everything.
func wholeService(routes []traffic.HTTPRoute, i int) bool {
	return len(routes) == 1 || i == 0 && len(routes[0].Match) == 0
}

func diffDR(r traffic.Resource, old *traffic.DestinationRule) []Change {
	is := map[string]bool{}
	for _, s := range r.DR.Spec.Subsets {
		is[s.Name] = true
	}
	var out []Change
	for _, s := range old.Spec.Subsets {
		if is[s.Name] {
			continue
		}
		out = append(out, Change{Resource: r.Ref(), Services: services(r), Subset: s.Name, Kind: KindSubsetRemoved, Percent: 100,
			What: fmt.Sprintf("subset %s removed: routes to it answer 503", s.Name)})
	}
	for _, s := range r.DR.Spec.Subsets {
		for _, o := range old.Spec.Subsets {
			if o.Name == s.Name && !maps.Equal(o.Labels, s.Labels) {
				out = append(out, Change{Resource: r.Ref(), Services: services(r), Subset: s.Name, Kind: KindSubsetLabels, Percent: 100,
					What: fmt.Sprintf("subset %s selects the endpoints labelled %s (was %s): its traffic moves to them", s.Name, labels(s.Labels), labels(o.Labels))})
			}
		}
	}
	return out
}

// labels prints a label set in order: {k=v, ...}.
func labels(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
