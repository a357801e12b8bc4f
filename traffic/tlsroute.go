package traffic

import (
	"fmt"
	"slices"

	"github.com/sigil-mesh/sigil/naming"
)

// TLSRoute is one rule of a VirtualService's tls section (Istio's
// TLSRoute): a TLS connection the app opens to the VirtualService's host
// whose ClientHello names one of sniHosts (and, when set, on port, from a
// workload with sourceLabels) goes whole, still encrypted by the app, to
// one destination picked by weight; the sidecar never terminates it (TLS
// passthrough) and carries it inside the mesh's mTLS.
type TLSRoute struct {
	Match []TLSMatchAttributes `json:"match"`
	Route []RouteDestination   `json:"route"`
}

// TLSMatchAttributes matches a TLS connection by its SNI. Istio's
// destinationSubnets and sourceNamespace are refused by name.
type TLSMatchAttributes struct {
	SNIHosts     []string          `json:"sniHosts"`
	Port         uint32            `json:"port,omitempty"`
	SourceLabels map[string]string `json:"sourceLabels,omitempty"`
	// Gateways is as L4MatchAttributes.Gateways.
	Gateways []string `json:"gateways,omitempty"`
}

// tlsRoute is a compiled TLS route.
type tlsRoute struct {
	matches []tlsMatch
	route   *Route
}

// tlsMatch is a compiled TLSMatchAttributes: the ClientHello's SNI must
// match one of sni (a plain name, or a wildcard matched by pattern).
type tlsMatch struct {
	sni []naming.HostPattern
	l4Match
}

// compileTLS compiles a tls route; ok is false when none of its matches
// applies at a sidecar (compileTCP).
func compileTLS(source, namespace string, tr *TLSRoute) (tlsRoute, bool) {
	tcp, _ := compileTCP(source, namespace, &TCPRoute{Route: tr.Route})
	out := tlsRoute{route: tcp.route}
	for _, m := range tr.Match {
		l4, ok := compileL4Match(m.Port, m.SourceLabels, m.Gateways)
		if !ok {
			continue
		}
		cm := tlsMatch{l4Match: l4}
		for _, h := range m.SNIHosts {
			if p, err := naming.ParseHostPattern(h); err == nil { // Validate refused the others
				cm.sni = append(cm.sni, p)
			}
		}
		out.matches = append(out.matches, cm)
	}
	return out, len(out.matches) > 0
}

// HasTLSRoutes reports whether a VirtualService routes TLS connections to
// service (its key, as for Match) by SNI: the sidecar then reads the
// ClientHello of a connection before it routes it.
func (t *Table) HasTLSRoutes(service string) bool {
	return t != nil && len(routesAt(t.more.tls, service)) > 0
}

// MatchTLS finds the tls route for a TLS connection to service on port
// (0: not known) whose ClientHello named sni (matched against each
// match's sniHosts, a wildcard "*.suffix" by suffix), from a workload
// with sourceLabels. ok is false when none matches; the caller then tries the
// tcp routes, as Envoy falls back from the TLS filter chains.
func (t *Table) MatchTLS(service, sni string, port uint32, sourceLabels map[string]string) (*Route, bool) {
	if t == nil || sni == "" {
		return nil, false
	}
	sni = externalKey(sni)
	for _, tr := range routesAt(t.more.tls, service) {
		for _, m := range tr.matches {
			if m.fits(port, sourceLabels) && slices.ContainsFunc(m.sni, func(p naming.HostPattern) bool { return p.Matches(sni) }) {
				return tr.route, true
			}
		}
	}
	return nil, false
}

// tlsRoutes checks a VirtualService's tls routes: each has a match with
// sniHosts, and each SNI host is a host name or a wildcard "*.suffix" that
// is a subset of one of the VirtualService's hosts (Istio's
// validateSniHost: "mysite.example.com" or "*.m.example.com" under
// "*.example.com"), a mesh service being matched in any of its forms.
func (v *validator) tlsRoutes(vs *VirtualService) {
	ns := vs.Metadata.Namespace
	if ns == "" {
		ns = naming.DefaultNamespace // as Parse reads a resource without one
	}
	services := map[string]bool{}
	var patterns []naming.HostPattern
	for _, h := range vs.Spec.Hosts {
		if svc := ServiceOf(h, ns); !svc.IsZero() {
			services[svc.String()] = true
		}
		if p, err := naming.ParseHostPattern(h); err == nil {
			patterns = append(patterns, p)
		}
	}
	for i, tr := range vs.Spec.TLS {
		p := fmt.Sprintf("spec.tls[%d]", i)
		if len(tr.Match) == 0 {
			v.fail(p+".match", "at least one match with sniHosts is required")
		}
		for j, m := range tr.Match {
			mp := fmt.Sprintf("%s.match[%d]", p, j)
			v.labels(mp+".sourceLabels", m.SourceLabels)
			if len(m.SNIHosts) == 0 {
				v.fail(mp+".sniHosts", "at least one SNI host is required")
			}
			for k, h := range m.SNIHosts {
				hp := fmt.Sprintf("%s.sniHosts[%d]", mp, k)
				sni, err := naming.ParseHostPattern(h)
				if err != nil {
					v.fail(hp, "%q is not an SNI host name: %v", h, err)
					continue
				}
				if svc := ServiceOf(h, ns); !svc.IsZero() && services[svc.String()] {
					continue
				}
				if !slices.ContainsFunc(patterns, sni.SubsetOf) {
					v.fail(hp, "%q does not name one of the VirtualService's hosts %q, nor a name or wildcard within one of their wildcards", h, vs.Spec.Hosts)
				}
			}
			if m.Port > 65535 {
				v.fail(mp+".port", "%d is not a port", m.Port)
			}
			v.gatewayNames(mp+".gateways", m.Gateways)
		}
		v.l4Destinations(p, tr.Route)
	}
}
