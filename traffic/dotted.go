package traffic

import (
	"fmt"

	"github.com/sigil-mesh/sigil/naming"
)

// DottedHost is a resource's host of two labels, name.namespace
// (reviews.prod), which Sigil reads as Istio does, as a host outside the
// mesh, while Kubernetes DNS, and Sigil before it read names as Istio
// does, would find the service name of namespace namespace there. sigil
// apply warns of it: the resource likely means that service.
type DottedHost struct {
	Source  string         // the resource, as Resource.Ref names it
	Path    string         // the field: spec.hosts[0], spec.host, spec.http[0].route[0].destination.host
	Host    string         // the host, lower case
	Service naming.Service // the service Kubernetes DNS would find
}

// String is the warning shown to the user.
func (d DottedHost) String() string {
	return fmt.Sprintf("%s: %s: host %s is read as a host outside the mesh, as Istio reads dotted names; for the service %s in namespace %s write %s (or %s in a resource of namespace %s)",
		d.Source, d.Path, d.Host, d.Service.Name, d.Service.Namespace, naming.Resolver{}.FQDN(d.Service), d.Service.Name, d.Service.Namespace)
}

// DottedHosts lists the hosts of two labels that rs's resources name (a
// VirtualService's hosts and its routes' and mirrors' destinations, a
// DestinationRule's host), but those a DestinationRule of all says how to
// reach outside the mesh (tls DISABLE, SIMPLE or MUTUAL at some port):
// such a host, httpbin.org, is plainly meant as one outside the mesh.
func DottedHosts(all, rs []Resource) []DottedHost {
	reached := map[string]bool{}
	for _, r := range all {
		if r.DR != nil && ruleOriginates(&r.DR.Spec) {
			if k, err := parseExternalHost(r.DR.Spec.Host); err == nil {
				reached[k] = true
			}
		}
	}
	var out []DottedHost
	for _, r := range rs {
		check := func(path, host string) {
			h, err := resourceHost(host, r.Namespace)
			if err != nil {
				return
			}
			if svc, ok := h.DNSService(); ok && !reached[h.Name.String()] {
				out = append(out, DottedHost{Source: r.Ref(), Path: path, Host: h.Name.String(), Service: svc})
			}
		}
		switch {
		case r.VS != nil:
			for i, h := range r.VS.Spec.Hosts {
				check(fmt.Sprintf("spec.hosts[%d]", i), h)
			}
			eachDestination(r.VS, func(path string, d *Destination) { check(path+".host", d.Host) })
		case r.DR != nil:
			check("spec.host", r.DR.Spec.Host)
		}
	}
	return out
}
