// Package discovery turns Kubernetes Services, EndpointSlices
// (discovery.k8s.io/v1) and Pods into the mesh's services and endpoints,
// as Istio's service registry does for Kubernetes: the mesh's services and
// namespaces are Kubernetes's.
//
// Each Service ns/name is a mesh service with its ports and its virtual
// IPs (spec.clusterIPs; none for a headless Service). Each ready endpoint
// of its EndpointSlices, on each TCP port, is a mesh endpoint at
// address:port (the slice's port: the Service's targetPort resolved by
// the EndpointSlice controller) carrying the labels of the pod it belongs
// to (for DestinationRule subsets) and the identity that pod must present
// in the mTLS handshake (secure naming):
// spiffe://<td>/ns/<pod namespace>/sa/<pod serviceAccountName>.
//
// Fail closed: an endpoint whose pod is not known (no targetRef to a Pod,
// a Pod this server has not seen, a targetRef whose uid is not the Pod's,
// a Pod of another namespace than the Service's) has no identity it could
// be held to, so it is left out, never sent with an empty one. FQDN
// slices, non-TCP ports and ExternalName Services are not mesh traffic
// and are skipped.
//
// Watcher follows the three kinds through client-go informers and keeps
// a State: every Service, with its endpoints, under a revision that moves
// whenever the set changes.
package discovery

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Endpoint is one pod serving one port of a Service.
type Endpoint struct {
	// Service is the Service's name and namespace.
	Service naming.Service
	// Address is the pod's IP and the port it serves on (the slice's
	// port, the Service's targetPort).
	Address netip.AddrPort
	// ServicePort is the Service port (spec.ports[].port) this endpoint
	// serves.
	ServicePort uint16
	// Protocol is the port's declared protocol (see protocolOf): "tcp",
	// "http" or "" (undeclared).
	Protocol string
	// ClusterIPs are the Service's virtual IPs; nil for a headless one.
	ClusterIPs []netip.Addr
	// Identity is the SPIFFE ID the pod must present.
	Identity spiffeid.ID
	// Labels are the pod's labels.
	Labels map[string]string
}

// podLookup finds a pod by namespace and name; nil when unknown.
type podLookup func(namespace, name string) *corev1.Pod

// build returns the endpoints of svc from its slices, in a stable order,
// and how many ready endpoints it left out for want of a known pod.
// ExternalName Services have none.
func build(td spiffeid.TrustDomain, svc *corev1.Service, sl []*discoveryv1.EndpointSlice, pods podLookup) ([]Endpoint, int) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, 0
	}
	name := naming.Service{Name: svc.Name, Namespace: svc.Namespace}
	vips := clusterIPs(svc)
	var out []Endpoint
	unknown := 0
	seen := map[netip.AddrPort]bool{}
	for _, s := range sl {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, sp := range s.Ports {
			port, proto, ok := servicePort(svc, sp)
			if !ok {
				continue
			}
			for _, ep := range s.Endpoints {
				if !ready(ep) || len(ep.Addresses) == 0 {
					continue
				}
				// Every address of one endpoint is the same pod; Kubernetes
				// consumers (kube-proxy) take the first.
				ip, err := netip.ParseAddr(ep.Addresses[0])
				if err != nil {
					continue
				}
				addr := netip.AddrPortFrom(ip.Unmap(), uint16(*sp.Port))
				if seen[addr] {
					continue // the same pod in two slices, while the controller moves it
				}
				pod := podOf(s.Namespace, ep, pods)
				if pod == nil || pod.Namespace != svc.Namespace {
					unknown++
					continue
				}
				id, err := naming.WorkloadID(td, pod.Namespace, serviceAccount(pod))
				if err != nil {
					unknown++
					continue
				}
				seen[addr] = true
				out = append(out, Endpoint{Service: name, Address: addr, ServicePort: port, Protocol: proto, ClusterIPs: vips, Identity: id, Labels: maps.Clone(pod.Labels)})
			}
		}
	}
	slices.SortFunc(out, func(a, b Endpoint) int {
		return cmp.Or(cmp.Compare(a.ServicePort, b.ServicePort), a.Address.Compare(b.Address))
	})
	return out, unknown
}

// clusterIPs are a Service's virtual IPs: none for a headless Service
// (clusterIP None), which clients reach at its pods' own addresses.
func clusterIPs(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, s := range ips {
		if s == corev1.ClusterIPNone {
			return nil
		}
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// servicePort is the Service port a slice's port belongs to (the one of
// the same name; both "" for a Service of one unnamed port) and its
// protocol. Only TCP is mesh traffic.
func servicePort(svc *corev1.Service, sp discoveryv1.EndpointPort) (uint16, string, bool) {
	if sp.Port == nil || *sp.Port <= 0 || *sp.Port > 65535 {
		return 0, "", false
	}
	if sp.Protocol != nil && *sp.Protocol != corev1.ProtocolTCP {
		return 0, "", false
	}
	name := ""
	if sp.Name != nil {
		name = *sp.Name
	}
	for _, p := range svc.Spec.Ports {
		if p.Name == name && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) && p.Port > 0 && p.Port <= 65535 {
			return uint16(p.Port), protocolOf(p), true
		}
	}
	return 0, "", false
}

// protocolOf reads a Service port's declared protocol as Istio does: its
// appProtocol, else its name's prefix before "-" (http-web, tcp-db):
// "http" for HTTP of any version and gRPC; "tcp" for what a mesh carries
// opaque (TLS the app does itself, databases' and brokers' protocols,
// several of them server-first); "" for anything else (detected).
func protocolOf(p corev1.ServicePort) string {
	name := p.Name
	if p.AppProtocol != nil {
		name = *p.AppProtocol
	} else if i := strings.IndexByte(name, '-'); i >= 0 {
		name = name[:i]
	}
	switch strings.ToLower(name) {
	case "http", "http2", "grpc", "grpc-web", "h2c", "kubernetes.io/h2c", "kubernetes.io/ws":
		return "http"
	case "tcp", "tls", "https", "kubernetes.io/wss", "mysql", "mongo", "redis", "mqtt", "amqp", "kafka", "postgres", "postgresql", "nats":
		return "tcp"
	}
	return ""
}

// ready reads the endpoint's ready condition; nil means ready (the API's
// rule).
func ready(ep discoveryv1.Endpoint) bool {
	return ep.Conditions.Ready == nil || *ep.Conditions.Ready
}

// podOf is the pod an endpoint's targetRef names, nil when it names none,
// an unknown one, or one whose uid is not the targetRef's (a pod of the
// same name made since: its service account may differ).
func podOf(sliceNamespace string, ep discoveryv1.Endpoint, pods podLookup) *corev1.Pod {
	ref := ep.TargetRef
	if ref == nil || ref.Kind != "Pod" || ref.Name == "" {
		return nil
	}
	ns := cmp.Or(ref.Namespace, sliceNamespace)
	pod := pods(ns, ref.Name)
	if pod == nil || (ref.UID != "" && ref.UID != pod.UID) {
		return nil
	}
	return pod
}

// serviceAccount is the pod's service account; "default" when unset, as
// the API server's admission sets it.
func serviceAccount(pod *corev1.Pod) string {
	return cmp.Or(pod.Spec.ServiceAccountName, "default")
}
