package traffic

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sigil-mesh/sigil/naming"
)

// TCPRoute is one rule of a VirtualService's tcp section (Istio's
// TCPRoute): a TCP connection to the VirtualService's host, on a port and
// from a workload its match allows, goes whole to one destination picked
// by weight, as in Istio's TCP traffic-shifting task.
type TCPRoute struct {
	Match []L4MatchAttributes `json:"match,omitempty"`
	Route []RouteDestination  `json:"route"`
}

// L4MatchAttributes is what a TCP route can match on: the service port the
// connection is for, the labels of the sending workload, and the gateways
// the match is for. Istio's destinationSubnets and sourceNamespace are
// refused by name.
type L4MatchAttributes struct {
	Port         uint32            `json:"port,omitempty"`
	SourceLabels map[string]string `json:"sourceLabels,omitempty"`
	// Gateways, when set, replaces the VirtualService's gateways for this
	// match, as for HTTPMatchRequest.Gateways: it applies at sidecars only
	// if it names MeshGateway, and then sourceLabels do not apply.
	Gateways []string `json:"gateways,omitempty"`
}

// RouteDestination is a weighted destination of a TCP route. Weights are
// relative, as for HTTP routes.
type RouteDestination struct {
	Destination Destination `json:"destination"`
	Weight      *int32      `json:"weight,omitempty"`
}

// moreRules are the parts of a Table beyond HTTP routes and mesh
// DestinationRules.
type moreRules struct {
	tcp      *hostIndex[*[]tcpRoute] // tcp routes by host key (HostKey: a service, an outside host, a wildcard), in order
	tls      *hostIndex[*[]tlsRoute] // tls routes by host key, in order (tlsroute.go)
	external *hostIndex[*Rule]       // DestinationRules of hosts outside the mesh, by externalKey or wildcard (tlsmode.go)
	services map[naming.Service]bool // the services a VirtualService or DestinationRule names in a service form (NamesService)
}

// l4Match is a compiled L4MatchAttributes; port 0 matches every port.
type l4Match struct {
	port         uint32
	sourceLabels map[string]string
	// gateways: the match names gateways of its own (MeshGateway among
	// them, or it is not compiled), so sourceLabels do not apply, as for
	// HTTP matches.
	gateways bool
}

// compileL4Match compiles m; ok is false when m names gateways but not
// MeshGateway, so it never matches at a sidecar.
func compileL4Match(port uint32, sourceLabels map[string]string, gateways []string) (l4Match, bool) {
	if len(gateways) > 0 && !slices.Contains(gateways, MeshGateway) {
		return l4Match{}, false
	}
	return l4Match{port: port, sourceLabels: sourceLabels, gateways: len(gateways) > 0}, true
}

// fits reports whether a connection on port from a workload with
// sourceLabels fits m.
func (m *l4Match) fits(port uint32, sourceLabels map[string]string) bool {
	return (m.port == 0 || m.port == port) && (m.gateways || hasAll(sourceLabels, m.sourceLabels))
}

// tcpRoute is a compiled TCP route: its matches and its destinations,
// held in a Route so Pick weighs them as for HTTP.
type tcpRoute struct {
	matches []l4Match
	route   *Route
}

// compileTCP compiles a tcp route; ok is false when it has matches and
// none applies at a sidecar (all name gateways but not MeshGateway): it
// must not become a catch-all there.
func compileTCP(source, namespace string, tr *TCPRoute) (tcpRoute, bool) {
	h := HTTPRoute{}
	for _, d := range tr.Route {
		h.Route = append(h.Route, HTTPRouteDestination{Destination: d.Destination, Weight: d.Weight})
	}
	out := tcpRoute{route: compileRoute(source, namespace, &h)}
	for _, m := range tr.Match {
		if cm, ok := compileL4Match(m.Port, m.SourceLabels, m.Gateways); ok {
			out.matches = append(out.matches, cm)
		}
	}
	return out, len(tr.Match) == 0 || len(out.matches) > 0
}

// MatchTCP finds the TCP route for a connection to service (its key, as
// for Match) on port (0 when the port is not known) from a workload with
// sourceLabels. ok is false when no tcp route of a VirtualService covers
// the service, or none matches; the caller then sends the connection to
// the service itself, as a VirtualService with only http routes leaves
// TCP alone in Istio.
func (t *Table) MatchTCP(service string, port uint32, sourceLabels map[string]string) (*Route, bool) {
	if t == nil {
		return nil, false
	}
	for _, tr := range routesAt(t.more.tcp, service) {
		if len(tr.matches) == 0 {
			return tr.route, true
		}
		for _, m := range tr.matches {
			if m.fits(port, sourceLabels) {
				return tr.route, true
			}
		}
	}
	return nil, false
}

// compileTCPRoutes adds a VirtualService's tcp and tls routes to t, under
// each of its hosts as HostKey keys it: a mesh service, a host outside
// the mesh (a CONNECT to it is routed by them, proxy's openL4) or a
// wildcard, which covers the services and outside hosts it matches when
// no more specific host has routes (Istio's rule, as for http).
func (t *Table) compileTCPRoutes(r Resource, hosts []hostKey) {
	for _, h := range hosts {
		key, wild := h.key, h.wildcard
		for i := range r.VS.Spec.TLS {
			if t.more.tls == nil {
				t.more.tls = newHostIndex[*[]tlsRoute]()
			}
			if tr, ok := compileTLS(r.Ref(), r.Namespace, &r.VS.Spec.TLS[i]); ok {
				rs := t.more.tls.ref(key, wild, func() *[]tlsRoute { return new([]tlsRoute) })
				*rs = append(*rs, tr)
			}
		}
		for i := range r.VS.Spec.TCP {
			if t.more.tcp == nil {
				t.more.tcp = newHostIndex[*[]tcpRoute]()
			}
			if tr, ok := compileTCP(r.Ref(), r.Namespace, &r.VS.Spec.TCP[i]); ok {
				rs := t.more.tcp.ref(key, wild, func() *[]tcpRoute { return new([]tcpRoute) })
				*rs = append(*rs, tr)
			}
		}
	}
}

// routesAt is what x holds for key (nil x: nothing).
func routesAt[T any](x *hostIndex[*[]T], key string) []T {
	if x == nil {
		return nil
	}
	if rs, ok := x.lookup(key); ok {
		return *rs
	}
	return nil
}

// l4Routes checks a VirtualService's tcp and tls routes.
func (v *validator) l4Routes(vs *VirtualService) {
	v.tlsRoutes(vs)
	for i, tr := range vs.Spec.TCP {
		p := fmt.Sprintf("spec.tcp[%d]", i)
		for j, m := range tr.Match {
			if m.Port > 65535 {
				v.fail(fmt.Sprintf("%s.match[%d].port", p, j), "%d is not a port", m.Port)
			}
			v.gatewayNames(fmt.Sprintf("%s.match[%d].gateways", p, j), m.Gateways)
			v.labels(fmt.Sprintf("%s.match[%d].sourceLabels", p, j), m.SourceLabels)
		}
		v.l4Destinations(p, tr.Route)
	}
}

// l4Destinations checks the route of a tcp or tls route (p is its path):
// mesh destinations, relative weights of which none is negative and not
// all are 0 (Istio's rules).
func (v *validator) l4Destinations(p string, route []RouteDestination) {
	if len(route) == 0 {
		v.fail(p+".route", "at least one destination is required")
	}
	allZero := len(route) > 1
	for j, d := range route {
		dp := fmt.Sprintf("%s.route[%d]", p, j)
		v.destination(dp+".destination", &d.Destination)
		if d.Weight != nil && *d.Weight < 0 {
			v.fail(dp+".weight", "%d must not be negative", *d.Weight)
		}
		allZero = allZero && d.Weight != nil && *d.Weight == 0
	}
	if allZero {
		v.fail(p+".route", "every weight is 0: no destination would get a connection")
	}
}

// externalKey is how a host outside the mesh is kept: lower case, no
// trailing dot.
func externalKey(host string) string { return strings.ToLower(strings.TrimSuffix(host, ".")) }
