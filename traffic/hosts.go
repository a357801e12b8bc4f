package traffic

import (
	"sort"
	"strings"

	"github.com/sigil-mesh/sigil/naming"
)

// A resource's host is one of three things (DESIGN: Names;
// naming.Resolver.ResourceHost reads it):
//
//   - a mesh service, in one of its own forms (a bare name in the
//     resource's namespace, svc.ns.svc, svc.ns.svc.cluster.local): its
//     key is "name.namespace" (naming.Service.String);
//   - a host outside the mesh (httpbin.org, reviews.prod, api.github.com;
//     every other dotted name, as Istio takes a dotted name as fully
//     qualified): its key is the name itself, lower case. It never
//     attaches to a mesh service, whatever its labels;
//   - a wildcard, "*.suffix" (or "*" for a DestinationRule): it applies
//     to every service whose FQDN (name.ns.svc.cluster.local), and to
//     every outside host, that ends in ".suffix", when no more specific
//     resource names that host (Istio's rule: the most specific host
//     wins).
//
// Keys cannot collide: a service's key has two labels and no trailing
// dot; an outside host of two labels is keyed by its absolute form with
// the trailing dot, "httpbin.org." (OutsideKey), never as the service
// Kubernetes DNS reads it as (httpbin of namespace org). The request path
// reads such a name as that service when the mesh knows it, else as the
// outside host (naming.Resolver.AppAuthority), and looks up that key.

// HostKey is the key of host as a resource in namespace writes it, and
// whether it is a wildcard pattern (then the key is the pattern). ok is
// false for a host that is not a host name (Validate refuses those).
func HostKey(host, namespace string) (key string, wildcard, ok bool) {
	h, err := resourceHost(host, namespace)
	switch {
	case err != nil:
		return "", false, false
	case h.Kind == naming.MeshService:
		return h.Service.String(), false, true
	}
	if h.Kind == naming.WildcardHost {
		return h.Name.String(), true, true
	}
	return OutsideKey(h.Name.String()), false, true
}

// hostName is the name wildcards are matched against for a key of an
// index of services and outside hosts: a service's FQDN, or the outside
// host itself.
func hostName(key string) string {
	if strings.HasSuffix(key, ".") {
		return HostOfKey(key) // an outside host of two labels (OutsideKey)
	}
	if strings.Count(key, ".") == 1 {
		name, ns, _ := strings.Cut(key, ".")
		return naming.Resolver{}.FQDN(naming.Service{Name: name, Namespace: ns})
	}
	return key
}

// hostIndex finds what was written for a host: the value under its own
// key, else the most specific wildcard that matches it.
type hostIndex[T any] struct {
	exact map[string]T
	wild  []wildEntry[T] // most specific first
	// outside: every key is a host outside the mesh, as written (not
	// OutsideKey's form), matched against wildcards by its own name.
	outside bool
}

type wildEntry[T any] struct {
	pattern naming.HostPattern
	value   T
}

func newHostIndex[T any]() *hostIndex[T] { return &hostIndex[T]{exact: map[string]T{}} }

// newOutsideIndex is an index of hosts outside the mesh only.
func newOutsideIndex[T any]() *hostIndex[T] {
	return &hostIndex[T]{exact: map[string]T{}, outside: true}
}

// name is what x's wildcards are matched against for key.
func (x *hostIndex[T]) name(key string) string {
	if x.outside {
		return key
	}
	return hostName(key)
}

// ref returns the value stored under key (a HostKey), creating it with
// mk when absent, for building the index.
func (x *hostIndex[T]) ref(key string, wildcard bool, mk func() T) T {
	if !wildcard {
		v, ok := x.exact[key]
		if !ok {
			v = mk()
			x.exact[key] = v
		}
		return v
	}
	for _, e := range x.wild {
		if e.pattern.String() == key {
			return e.value
		}
	}
	p, _ := naming.ParseHostPattern(key)
	v := mk()
	x.wild = append(x.wild, wildEntry[T]{pattern: p, value: v})
	sort.SliceStable(x.wild, func(i, j int) bool { return x.wild[i].pattern.Specificity() > x.wild[j].pattern.Specificity() })
	return v
}

// set stores v under key, replacing what was there.
func (x *hostIndex[T]) set(key string, wildcard bool, v T) {
	if !wildcard {
		x.exact[key] = v
		return
	}
	for i, e := range x.wild {
		if e.pattern.String() == key {
			x.wild[i].value = v
			return
		}
	}
	x.ref(key, true, func() T { return v })
}

// written returns the host as a resource wrote it that covers key: key
// itself when it has an entry, else the most specific wildcard pattern
// that matches it; its specificity (naming.HostPattern.Specificity); and
// whether any did.
func (x *hostIndex[T]) written(key string) (string, int, bool) {
	if x == nil {
		return "", 0, false
	}
	if _, ok := x.exact[key]; ok {
		return key, 1 << 16, true
	}
	if len(x.wild) > 0 {
		name := x.name(key)
		for _, e := range x.wild {
			if e.pattern.Matches(name) {
				return e.pattern.String(), e.pattern.Specificity(), true
			}
		}
	}
	return "", 0, false
}

// lookup returns the value for key (a service key or an outside host).
func (x *hostIndex[T]) lookup(key string) (T, bool) {
	if v, ok := x.exact[key]; ok {
		return v, true
	}
	if len(x.wild) > 0 {
		name := x.name(key)
		for _, e := range x.wild {
			if e.pattern.Matches(name) {
				return e.value, true
			}
		}
	}
	var zero T
	return zero, false
}

// Visible reports whether r applies to sidecars in namespace, by its
// exportTo (Istio's rule: absent means every namespace; "." is r's own,
// "*" every one, any other entry a namespace by name).
func (r Resource) Visible(namespace string) bool {
	var to []string
	switch {
	case r.VS != nil:
		to = r.VS.Spec.ExportTo
	case r.DR != nil:
		to = r.DR.Spec.ExportTo
	}
	if len(to) == 0 {
		return true
	}
	for _, ns := range to {
		if ns == "*" || ns == namespace || ns == "." && r.Namespace == namespace {
			return true
		}
	}
	return false
}

// VisibleIn returns the resources of all that apply to sidecars in
// namespace (Visible), in order.
func VisibleIn(all []Resource, namespace string) []Resource {
	out := make([]Resource, 0, len(all))
	for _, r := range all {
		if r.Visible(namespace) {
			out = append(out, r)
		}
	}
	return out
}

// OutsideKey is the table key of name, a host outside the mesh in
// canonical form (lower case, no trailing dot; naming.HostPattern.String):
// the name itself, or, for a name of two labels, its absolute form with
// the trailing dot (httpbin.org.), so that it never equals the key of the
// service Kubernetes DNS reads it as ("httpbin.org", the service httpbin
// of namespace org).
func OutsideKey(name string) string {
	if strings.Count(name, ".") == 1 && !strings.HasPrefix(name, "*") {
		return name + "."
	}
	return name
}

// HostOfKey is the host a key names, for labels, messages and dialling:
// the key without OutsideKey's trailing dot.
func HostOfKey(key string) string { return strings.TrimSuffix(key, ".") }
