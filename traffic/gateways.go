package traffic

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/sigil-mesh/sigil/naming"
)

// MeshGateway is Istio's reserved gateway name for every sidecar of the
// mesh. Sigil has sidecars only: a VirtualService, or a match, that names
// gateways but not this one has no effect in Sigil.
const MeshGateway = "mesh"

// AppliesToMesh reports whether a VirtualService with these gateways
// (spec.gateways) applies to the sidecars: when it names none, or names
// MeshGateway, as in Istio.
func AppliesToMesh(gateways []string) bool {
	return len(gateways) == 0 || slices.Contains(gateways, MeshGateway)
}

// gatewayNames checks a gateways list as Istio's validation does: each
// entry is MeshGateway, "namespace/name" (two DNS-1123 labels), or a
// name without a namespace, which must be a DNS-1123 subdomain (Istio
// takes "name.namespace.svc.cluster.local" as a legacy form of the same).
func (v *validator) gatewayNames(p string, gws []string) {
	for i, g := range gws {
		gp := fmt.Sprintf("%s[%d]", p, i)
		if g == MeshGateway {
			continue
		}
		ns, name, scoped := strings.Cut(g, "/")
		switch {
		case !scoped && !naming.ValidName(g):
			v.fail(gp, "%s is not a gateway name: want %q, NAME or NAMESPACE/NAME (DNS-1123 names)", naming.Quote(g), MeshGateway)
		case scoped && (ns == "" || name == ""):
			v.fail(gp, "%s: the namespace and the gateway name cannot be empty", naming.Quote(g))
		case scoped && !naming.ValidNamespace(ns):
			v.fail(gp, "%s: %s is not a namespace (a DNS-1123 label)", naming.Quote(g), naming.Quote(ns))
		case scoped && !naming.ValidServiceName(name):
			v.fail(gp, "%s: %s is not a gateway name (a DNS-1123 label)", naming.Quote(g), naming.Quote(name))
		}
	}
}

// portNumber checks a port number as Istio does: 1 to 65535.
func (v *validator) portNumber(p string, n uint32) {
	if n < 1 || n > 65535 {
		v.fail(p, "%d is not a port: want 1 to 65535", n)
	}
}

// vsGateways checks a VirtualService's gateways, its matches' ports and
// gateways, and its destinations' ports (Istio's validatePortSelector).
func (v *validator) vsGateways(vs *VirtualService) {
	v.gatewayNames("spec.gateways", vs.Spec.Gateways)
	for i, rt := range vs.Spec.HTTP {
		for j, m := range rt.Match {
			p := fmt.Sprintf("spec.http[%d].match[%d]", i, j)
			v.gatewayNames(p+".gateways", m.Gateways)
			if m.Port != 0 {
				v.portNumber(p+".port", m.Port)
			}
		}
		for j, d := range rt.Route {
			if d.Destination.Port != nil {
				v.portNumber(fmt.Sprintf("spec.http[%d].route[%d].destination.port.number", i, j), d.Destination.Port.Number)
			}
		}
		if rt.Mirror != nil && rt.Mirror.Port != nil {
			v.portNumber(fmt.Sprintf("spec.http[%d].mirror.port.number", i), rt.Mirror.Port.Number)
		}
	}
}

// portLevelSettings checks a traffic policy's per-port entries: each names
// a port (Istio: "portTrafficPolicy must have valid port"), no two the
// same one, and each entry's fields pass the rules of the policy's own.
func (v *validator) portLevelSettings(p string, tp *TrafficPolicy) {
	if tp == nil {
		return
	}
	seen := map[uint32]bool{}
	for i, ps := range tp.PortLevelSettings {
		pp := fmt.Sprintf("%s.portLevelSettings[%d]", p, i)
		if ps.Port == nil {
			v.fail(pp+".port", "required: the port this policy is for")
		} else {
			v.portNumber(pp+".port.number", ps.Port.Number)
			if seen[ps.Port.Number] {
				v.fail(pp+".port.number", "%d repeats an earlier entry", ps.Port.Number)
			}
			seen[ps.Port.Number] = true
		}
		if q := ps; true {
			q.Port = nil
			if reflect.DeepEqual(q, PortTrafficPolicy{}) {
				v.fail(pp, "set at least one policy besides port (Istio: port traffic policy must have at least one field)")
			}
		}
		v.trafficPolicy(pp, &TrafficPolicy{LoadBalancer: ps.LoadBalancer, ConnectionPool: ps.ConnectionPool, OutlierDetection: ps.OutlierDetection, TLS: ps.TLS})
	}
}
