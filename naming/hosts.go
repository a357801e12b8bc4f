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

// ParseHostPattern checks a resource's host: a DNS name (RFC 1123 labels;
// ErrMalformed otherwise), optionally with '*' as the whole leftmost label
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
	if _, err := netip.ParseAddr(strings.Trim(rest, "[]")); err == nil {
		return HostPattern{}, fmt.Errorf("%w: %s is an IP address", ErrNotInMesh, Quote(host))
	}
	labels, err := splitName(rest)
	if err != nil {
		return HostPattern{}, fmt.Errorf("%w %s: %w", ErrMalformed, Quote(host), err)
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

// OutsideHost is the canonical form (lower case, no trailing dot, no
// port) of an authority that names no mesh service, for looking up the
// resources written for that host. Errors wrap ErrMalformed; an IP
// address wraps ErrNotInMesh.
func OutsideHost(authority string) (string, error) {
	host, err := splitPort(authority)
	if err != nil {
		return "", err
	}
	h, err := ParseHostPattern(host)
	if err != nil {
		return "", err
	}
	if h.IsWildcard() {
		return "", fmt.Errorf("%w %s: '*' in a request's host", ErrMalformed, Quote(authority))
	}
	return h.String(), nil
}
