// Package naming holds the names of the mesh, one parser each, so that
// server, agent, proxy, policy and CLI read every name by the same rule:
//
//   - SPIFFE IDs (spiffeid.go): workload IDs (ParseWorkloadID,
//     NamespaceServiceAccount for the exact /ns/<ns>/sa/<sa> form), agent
//     IDs (AgentID, ParseAgentID), the server's ID, node names;
//   - service, namespace and Kubernetes object names, and labels
//     (names.go: ValidServiceName, ValidNamespace, ValidName,
//     ValidateLabel);
//   - the hosts (a Host header, an HTTP/2 :authority, a CONNECT target, a
//     VirtualService host) that name a mesh service (Resolver, below);
//   - endpoint addresses, host:port of a sidecar's inbound (endpoint.go:
//     ParseEndpoint).
//
// Errors carry the prefix "naming: ". No other package takes these names
// apart by hand (TestOneParserPerName).
//
// A host names a service only in that service's own forms, as Kubernetes
// DNS spells them (https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/):
//
//	svc                           the caller's own namespace (a DNS search path)
//	svc.ns
//	svc.ns.svc
//	svc.ns.svc.<cluster domain>   cluster.local unless configured
//
// each optionally with a port and a trailing dot, compared without case
// (RFC 4343). svc.ns is the service on the request path only when the
// mesh knows it (Resolver.AppAuthority); in a resource, a dotted name is
// read as Istio reads it, and svc.ns is a host outside the mesh
// (Resolver.ResourceHost, resourcehost.go). Any other well-formed name, api.github.com or an IP address,
// is not a mesh service (ErrNotInMesh); a name that is not well formed
// (empty labels, a bad port, userinfo, escapes, spaces, non-ASCII) is
// ErrMalformed. The proxy answers the first with 502 and the second with
// 400, so nothing outside the mesh is ever routed into it.
package naming

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Defaults, as Kubernetes has them.
const (
	DefaultClusterDomain = "cluster.local"
	DefaultNamespace     = "default"
)

// Errors a caller branches on: a malformed host is the caller's mistake
// (400), a host outside the mesh is a name the mesh does not serve (502).
var (
	ErrMalformed = errors.New("naming: malformed host")
	ErrNotInMesh = errors.New("naming: not a mesh service name")
)

// maxHost is the longest DNS name in text, without its trailing dot
// (RFC 1035 §2.3.4: 255 octets on the wire).
const maxHost = 253

// ValidServiceName reports whether name is a DNS label as RFC 1123 §2.1
// has it: a-z, 0-9 and inner '-', 1 to 63 characters, lower case. It is
// the form of service and subset names everywhere in Sigil (resources,
// sidecar flags, registrations, entries).
func ValidServiceName(name string) bool { return isDNS1123Label(name) }

// ValidNamespace reports whether ns can be a namespace (metadata.namespace,
// the /ns/ segment of a workload ID): the same DNS label
// rule as a service name (Kubernetes namespaces are RFC 1123 labels, as
// IsDNS1123Label). A refusal states NamespaceRule.
func ValidNamespace(ns string) bool { return ValidServiceName(ns) }

// Service is a mesh service: a name in a namespace. The zero Service is
// no service.
type Service struct {
	Name      string
	Namespace string
}

// IsZero reports whether s names no service.
func (s Service) IsZero() bool { return s.Name == "" }

// String is "name.namespace", the service's short DNS form and the key
// routing tables use.
func (s Service) String() string { return s.Name + "." + s.Namespace }

// Resolver reads hosts for a caller in one namespace, with one cluster
// domain. Build it with NewResolver; the zero Resolver resolves bare names
// to "default" with the cluster domain cluster.local.
type Resolver struct {
	namespace string
	domain    []string // the cluster domain's labels
}

// NewResolver returns a resolver for callers in namespace whose cluster
// domain is domain (such as cluster.local). Both must be well formed.
func NewResolver(namespace, domain string) (Resolver, error) {
	if !ValidNamespace(namespace) {
		return Resolver{}, fmt.Errorf("naming: namespace %q: want a DNS label (a-z, 0-9, inner '-', at most 63)", namespace)
	}
	labels, err := splitName(domain, nil)
	if err != nil {
		return Resolver{}, fmt.Errorf("naming: cluster domain %q: %w", domain, err)
	}
	return Resolver{namespace: namespace, domain: labels}, nil
}

// Namespace is the namespace a bare service name resolves to.
func (r Resolver) Namespace() string {
	if r.namespace == "" {
		return DefaultNamespace
	}
	return r.namespace
}

// ClusterDomain is the domain the longest form ends with.
func (r Resolver) ClusterDomain() string {
	if r.domain == nil {
		return DefaultClusterDomain
	}
	return strings.Join(r.domain, ".")
}

// Authority resolves host[:port] as a Host header, an :authority or a
// CONNECT target carries it. The port, when given, must be 1 to 65535; it
// does not choose the service. Errors wrap ErrMalformed or ErrNotInMesh.
func (r Resolver) Authority(authority string) (Service, error) {
	host, err := splitPort(authority)
	if err != nil {
		return Service{}, err
	}
	return r.Host(host)
}

// Host resolves a host name without a port (a VirtualService host, a
// destination host). Errors wrap ErrMalformed or ErrNotInMesh.
func (r Resolver) Host(host string) (Service, error) {
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return Service{}, fmt.Errorf("%w %q: unclosed IPv6 literal", ErrMalformed, host)
		}
		if _, err := netip.ParseAddr(host[1 : len(host)-1]); err != nil {
			return Service{}, fmt.Errorf("%w %q: bad IPv6 literal", ErrMalformed, host)
		}
		return Service{}, fmt.Errorf("%w: %q is an IP address", ErrNotInMesh, host)
	}
	var buf [8]string
	labels, err := splitName(host, buf[:])
	if err != nil {
		return Service{}, fmt.Errorf("%w %q: %w", ErrMalformed, host, err)
	}
	svc := Service{Name: labels[0], Namespace: r.Namespace()}
	switch {
	case len(labels) == 1:
	case len(labels) == 2 || len(labels) == 3 && labels[2] == "svc":
		svc.Namespace = labels[1]
	case len(labels) > 3 && labels[2] == "svc" && r.inDomain(labels[3:]):
		svc.Namespace = labels[1]
	default:
		return Service{}, fmt.Errorf("%w: %q (mesh services are svc, svc.ns, svc.ns.svc or svc.ns.svc.%s)", ErrNotInMesh, host, r.ClusterDomain())
	}
	return svc, nil
}

func (r Resolver) inDomain(labels []string) bool {
	domain := r.domain
	if domain == nil {
		domain = defaultDomain
	}
	if len(labels) != len(domain) {
		return false
	}
	for i := range labels {
		if labels[i] != domain[i] {
			return false
		}
	}
	return true
}

var defaultDomain = strings.Split(DefaultClusterDomain, ".")

// splitPort cuts an optional :port off an authority, refusing what RFC
// 3986 §3.2 allows but no mesh host needs: userinfo, an empty port.
func splitPort(a string) (string, error) {
	if a == "" {
		return "", fmt.Errorf("%w: empty", ErrMalformed)
	}
	host, port := a, ""
	if strings.HasPrefix(a, "[") {
		end := strings.IndexByte(a, ']')
		if end < 0 {
			return "", fmt.Errorf("%w %q: unclosed IPv6 literal", ErrMalformed, a)
		}
		host = a[:end+1]
		if rest := a[end+1:]; rest != "" {
			p, ok := strings.CutPrefix(rest, ":")
			if !ok {
				return "", fmt.Errorf("%w %q: text after the IPv6 literal", ErrMalformed, a)
			}
			port = p
			if port == "" {
				return "", fmt.Errorf("%w %q: empty port", ErrMalformed, a)
			}
		}
	} else if i := strings.LastIndexByte(a, ':'); i >= 0 {
		host, port = a[:i], a[i+1:]
		if port == "" {
			return "", fmt.Errorf("%w %q: empty port", ErrMalformed, a)
		}
	}
	if port != "" && !validPort(port) {
		return "", fmt.Errorf("%w %q: port must be 1 to 65535", ErrMalformed, a)
	}
	return host, nil
}

func validPort(p string) bool {
	if len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n >= 1 && n <= 65535
}

// splitName checks a DNS name (RFC 1123 §2.1 host names: labels of
// letters, digits and inner '-'; one trailing dot allowed) and returns its
// labels in lower case, appended to buf[:0] (a caller's array spares the
// allocation on the request path).
func splitName(name string, buf []string) ([]string, error) {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return nil, errors.New("empty name")
	}
	if len(name) > maxHost {
		return nil, fmt.Errorf("longer than %d characters", maxHost)
	}
	// ASCII only, before any case folding: strings.ToLower would fold
	// U+212A (Kelvin sign) to 'k' and let a non-ASCII name pass.
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 'A' && c <= 'Z' {
			name = asciiLower(name)
			break
		}
	}
	labels := buf[:0]
	for rest := name; ; {
		l, after, more := strings.Cut(rest, ".")
		if l == "" {
			return nil, errors.New("empty label")
		}
		if !ValidServiceName(l) {
			return nil, fmt.Errorf("label %q: want letters, digits and inner '-', at most 63", l)
		}
		labels = append(labels, l)
		if !more {
			return labels, nil
		}
		rest = after
	}
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
