package naming

import (
	"fmt"
	"strings"
)

// Two readings of a dotted name, one per side of the mesh
// (docs/istio.md, Names):
//
//   - in a resource (a VirtualService's hosts, a destination, a mirror, a
//     DestinationRule's host) Istio's own: a name without a dot is a short
//     name, the service of the resource's namespace; a name with a dot is
//     taken as fully qualified (Istio's ResolveShortnameToFQDN). Sigil
//     keeps svc.ns.svc as the mesh service too, as Kubernetes DNS resolves
//     it (Istio would not). Every other dotted name, two labels included
//     (httpbin.org, reviews.prod), is a host outside the mesh
//     (Resolver.ResourceHost);
//   - on the request path, the authority an app sends, Kubernetes DNS's:
//     its search path tries name.ns.svc.<cluster domain> before the name
//     as given, so reviews.prod is the service reviews of namespace prod
//     when the mesh knows that service, else the host outside the mesh
//     reviews.prod (Resolver.AppAuthority).

// HostKind is what a resource's host names.
type HostKind int

// The kinds of a resource's host.
const (
	// MeshService is a service of the mesh, in one of its forms.
	MeshService HostKind = iota + 1
	// OutsideHost is one host outside the mesh: it never attaches to a
	// mesh service, whatever its labels.
	OutsideHost
	// WildcardHost is "*" or "*.suffix" (HostPattern).
	WildcardHost
)

// String names the kind as docs and errors do.
func (k HostKind) String() string {
	switch k {
	case MeshService:
		return "mesh service"
	case OutsideHost:
		return "host outside the mesh"
	case WildcardHost:
		return "wildcard"
	}
	return "no host"
}

// ResourceHost is a resource's host as Resolver.ResourceHost reads it.
type ResourceHost struct {
	Kind HostKind
	// Service is the mesh service (Kind MeshService), else zero.
	Service Service
	// Name is the host in canonical form (lower case, no trailing dot):
	// the outside host or the wildcard pattern; for a service, the host
	// as written, canonical.
	Name HostPattern
}

// ResourceHost reads host as a resource of the resolver's namespace
// writes it (Istio's reading; the package comment above): a bare name is
// the service of that namespace; name.ns.svc and
// name.ns.svc.<cluster domain> are the service name of namespace ns;
// "*" and "*.suffix" are wildcards; every other dotted name is a host
// outside the mesh. Errors are ParseHostPattern's: ErrMalformed,
// ErrWildcard, and ErrNotInMesh for an IP address.
func (r Resolver) ResourceHost(host string) (ResourceHost, error) {
	p, err := ParseHostPattern(host)
	if err != nil {
		return ResourceHost{}, err
	}
	if p.IsWildcard() {
		return ResourceHost{Kind: WildcardHost, Name: p}, nil
	}
	labels := strings.Split(p.String(), ".")
	svc := Service{Name: labels[0], Namespace: r.Namespace()}
	switch {
	case len(labels) == 1:
	case len(labels) == 3 && labels[2] == "svc",
		len(labels) > 3 && labels[2] == "svc" && r.inDomain(labels[3:]):
		svc.Namespace = labels[1]
	default:
		return ResourceHost{Kind: OutsideHost, Name: p}, nil
	}
	return ResourceHost{Kind: MeshService, Service: svc, Name: p}, nil
}

// DNSService is the service Kubernetes DNS would find for an outside
// host of two labels, name.namespace (reviews.prod: the service reviews
// of namespace prod), and whether h is such a host: the form Sigil read
// as a mesh service in resources before it read names as Istio does
// (sigil apply warns of it).
func (h ResourceHost) DNSService() (Service, bool) {
	if h.Kind != OutsideHost {
		return Service{}, false
	}
	name, ns, ok := strings.Cut(h.Name.String(), ".")
	if !ok || strings.Contains(ns, ".") {
		return Service{}, false
	}
	return Service{Name: name, Namespace: ns}, true
}

// AppAuthority resolves host[:port] as an app sends it to its sidecar (a
// Host header, an :authority, a CONNECT target), as Kubernetes DNS would:
// as Authority, except that a name of two labels, name.ns, is the service
// name of namespace ns only when known says the mesh knows that service
// (it has endpoints, or a resource names it); otherwise it is the host
// outside the mesh it spells, and the error wraps ErrNotInMesh.
func (r Resolver) AppAuthority(authority string, known func(Service) bool) (Service, error) {
	svc, err := r.Authority(authority)
	if err != nil {
		return Service{}, err
	}
	host, _ := splitPort(authority)
	if strings.Count(strings.TrimSuffix(host, "."), ".") != 1 || known != nil && known(svc) {
		return svc, nil
	}
	return Service{}, fmt.Errorf("%w: %s: the mesh knows no service %s of namespace %s, so it is a host outside the mesh", ErrNotInMesh, Quote(host), svc.Name, svc.Namespace)
}
