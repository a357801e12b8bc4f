package naming

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrWildcard is the error of a host pattern whose '*' is not the whole
// leftmost label, the only place Istio allows it.
var ErrWildcard = errors.New("naming: '*' may only be the whole leftmost label (\"*\" or \"*.example.com\")")

// HostPattern is a host as an Istio resource names it (a VirtualService's
// hosts, a DestinationRule's host), checked and in canonical form: lower
// case, no trailing dot. It is either a plain DNS name, or a wildcard:
// "*" (every host) or "*.suffix" (every name ending in ".suffix", at any
// depth, as Istio's host.Name.Matches has it). Build it with
// ParseHostPattern.
type HostPattern struct{ name string }

// ParseHostPattern checks a resource's host: a DNS name (RFC 1123 labels,
// the last not all digits; ErrMalformed otherwise), optionally with '*' as the whole leftmost label
// (ErrWildcard for any other '*'). An IP address is not a host pattern: it
// names no service and no outside host by name (ErrNotInMesh).
func ParseHostPattern(host string) (HostPattern, error) {
	if host == "*" {
		return HostPattern{name: "*"}, nil
	}
	rest, wild := strings.CutPrefix(host, "*.")
	if strings.Contains(rest, "*") {
		return HostPattern{}, fmt.Errorf("%w: %s", ErrWildcard, Quote(host))
	}
	if _, err := netip.ParseAddr(strings.Trim(strings.TrimSuffix(rest, "."), "[]")); err == nil {
		return HostPattern{}, fmt.Errorf("%w: %s is an IP address", ErrNotInMesh, Quote(host))
	}
	labels, err := splitName(rest, nil)
	if err != nil {
		return HostPattern{}, fmt.Errorf("%w %s: %w", ErrMalformed, Quote(host), err)
	}
	if allDigits(labels[len(labels)-1]) {
		// 10.0.0.300, 127.1: what some resolvers read as an address, and
		// no DNS name (as ParseEndpoint has it).
		return HostPattern{}, fmt.Errorf("%w %s: the last label is all digits, as in an IP address", ErrMalformed, Quote(host))
	}
	name := strings.Join(labels, ".")
	if wild {
		name = "*." + name
	}
	return HostPattern{name: name}, nil
}

// String is the pattern in canonical form.
func (h HostPattern) String() string { return h.name }

// IsWildcard reports whether h is "*" or "*.suffix".
func (h HostPattern) IsWildcard() bool { return strings.HasPrefix(h.name, "*") }

// Matches reports whether the canonical host name (lower case, no
// trailing dot, as HostPattern.String or Resolver.FQDN give it) is one h
// covers: itself for a plain name; for "*.suffix" any name ending in
// ".suffix"; for "*" any name.
func (h HostPattern) Matches(name string) bool {
	switch {
	case h.name == "*":
		return true
	case h.IsWildcard():
		return strings.HasSuffix(name, h.name[1:])
	}
	return name == h.name
}

// SubsetOf reports whether every name h covers is one o covers, as
// Istio's host.Name.SubsetOf has it: a plain name when o Matches it; a
// wildcard "*.suffix" when o is "*" or a wildcard whose suffix ends its
// own ("*.a.example.com" is a subset of "*.example.com" and of itself);
// "*" only of "*".
func (h HostPattern) SubsetOf(o HostPattern) bool {
	switch {
	case o.name == "*":
		return true
	case !h.IsWildcard():
		return o.Matches(h.name)
	case h.name == "*" || !o.IsWildcard():
		return false
	}
	return strings.HasSuffix(h.name[1:], o.name[1:])
}

// Specificity orders patterns as Istio picks among those that match one
// host: a plain name before any wildcard, then the longer suffix first.
func (h HostPattern) Specificity() int {
	if !h.IsWildcard() {
		return 1 << 16
	}
	return len(h.name)
}

// FQDN is a service's fully qualified name in the resolver's cluster
// domain, "name.namespace.svc.cluster.local": what a wildcard host such
// as "*.prod.svc.cluster.local" or "*.local" is matched against.
func (r Resolver) FQDN(s Service) string {
	return s.Name + "." + s.Namespace + ".svc." + r.ClusterDomain()
}
