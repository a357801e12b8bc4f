package traffic

import (
	"fmt"
	"sort"
)

// SharedHost is a host that two VirtualServices of one namespace name,
// both bound to the mesh: at that namespace's sidecars only Winner's
// routes apply to it (CompileFor), Shadowed's never do.
type SharedHost struct {
	Shadowed string // the VirtualService whose routes for Host never apply, as Resource.Ref names it
	Path     string // its field: spec.hosts[0]
	Host     string // as written
	Winner   string // the VirtualService that routes Host
}

// String is the warning shown to the user.
func (s SharedHost) String() string {
	return fmt.Sprintf("%s: %s: %q is routed by %s at the sidecars, which take one VirtualService per host (as Istio's do): these routes for it never apply; put them in one VirtualService, or in delegates", s.Shadowed, s.Path, s.Host, s.Winner)
}

// SharedHosts lists the hosts of all that a VirtualService bound to the
// mesh names after another of its namespace does (by name, CompileFor's
// order): Istio's analyzer reports them (IST0109); Sigil, as Istio,
// applies the first and warns. VirtualServices of other namespaces for the
// same host are not listed: each routes it for its own namespace's
// sidecars.
func SharedHosts(all []Resource) []SharedHost {
	sorted := make([]Resource, 0, len(all))
	for _, r := range all {
		if r.VS != nil && AppliesToMesh(r.VS.Spec.Gateways) {
			sorted = append(sorted, r)
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Key() < sorted[j].Key() })
	first := map[string]string{} // namespace and host key: the VirtualService routing it
	var out []SharedHost
	for _, r := range sorted {
		for i, h := range r.VS.Spec.Hosts {
			key, _, ok := HostKey(h, r.Namespace)
			if !ok {
				continue
			}
			at := r.Namespace + " " + key
			if w, taken := first[at]; taken {
				if w != r.Ref() {
					out = append(out, SharedHost{Shadowed: r.Ref(), Path: fmt.Sprintf("spec.hosts[%d]", i), Host: h, Winner: w})
				}
				continue
			}
			first[at] = r.Ref()
		}
	}
	return out
}
