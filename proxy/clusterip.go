package proxy

// Kubernetes Service virtual IPs. On Kubernetes an app dials a Service's
// cluster IP and port (its DNS name resolves to it); iptables redirects
// the connection here and its original destination is that ClusterIP:port,
// which names the service as Istio's outbound listeners match it. A
// headless Service has no cluster IP: its clients dial the pods' own
// addresses, which match the service's endpoints (serviceForAddr).

import (
	"context"
	"log/slog"
	"net"
	"net/netip"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/proxy/upstream"
)

// declarePort records that svc has endpoints for the Service port port,
// and whether the Service declares it opaque TCP.
func (st *meshState) declarePort(svc naming.Service, port uint32, opaque bool) {
	setIn(&st.ports, svc, port)
	if opaque {
		setIn(&st.opaque, svc, port)
	}
}

func setIn(m *map[naming.Service]map[uint32]bool, svc naming.Service, port uint32) {
	if *m == nil {
		*m = map[naming.Service]map[uint32]bool{}
	}
	if (*m)[svc] == nil {
		(*m)[svc] = map[uint32]bool{}
	}
	(*m)[svc][port] = true
}

// addVIPs maps each of svc's cluster IPs at port to it. A ClusterIP:port
// two services claim is marked (the zero service) for
// dropConflictingVIPs: the API server never allocates one twice, so such
// a pair is a fault, and neither service gets the traffic.
func (st *meshState) addVIPs(svc naming.Service, port uint16, ips []string, log *slog.Logger) {
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.IsUnspecified() {
			log.Warn("service with a bad cluster IP; that IP is not matched", "service", svc.String(), "address", s)
			continue
		}
		if st.vips == nil {
			st.vips = map[netip.AddrPort]naming.Service{}
		}
		ap := netip.AddrPortFrom(ip.Unmap(), port)
		if have, ok := st.vips[ap]; ok && have != svc {
			st.vips[ap] = naming.Service{}
			continue
		}
		st.vips[ap] = svc
	}
}

// dropConflictingVIPs removes the ClusterIP:ports addVIPs marked.
func (st *meshState) dropConflictingVIPs(log *slog.Logger) {
	for ap, svc := range st.vips {
		if svc.IsZero() {
			delete(st.vips, ap)
			log.Warn("cluster IP and port claimed by two services; connections to it are refused", "dst", ap.String())
		}
	}
}

// serviceForAddr names the service a captured connection to dst is for: a
// Service's ClusterIP:port, else the service with an endpoint at dst
// exactly (a headless Service's pod, or a sidecar's address), else one
// with an endpoint on dst's host (plain hosts: a sidecar reached at its
// app's port); of several, the first by name. Zero when none. pin is dst
// when it is a Kubernetes pod's endpoint: the app dialled that pod (a
// headless Service's, a StatefulSet's pod-0), and gets it (pinned), as
// Istio's original-destination clusters do.
func (o *outbound) serviceForAddr(dst *net.TCPAddr) (svc naming.Service, pin string) {
	st := o.state.Load()
	ip, ok := netip.AddrFromSlice(dst.IP)
	if !ok {
		return naming.Service{}, ""
	}
	ap := netip.AddrPortFrom(ip.Unmap(), uint16(dst.Port))
	if svc, ok := st.vips[ap]; ok {
		return svc, ""
	}
	// A pod may back several services: the first by name, so every
	// connection (and every sidecar) picks the same one.
	var exact, onHost naming.Service
	pod := false
	first := func(have, svc naming.Service) naming.Service {
		if have.IsZero() || svc.String() < have.String() {
			return svc
		}
		return have
	}
	for svc, eps := range st.byService {
		for _, e := range eps {
			if !e.IP.IsValid() || e.IP.Unmap() != ap.Addr() {
				continue
			}
			if e.IPPort == ap.Port() {
				exact = first(exact, svc)
				pod = pod || e.SvcPort != 0
			}
			onHost = first(onHost, svc)
		}
	}
	if !exact.IsZero() {
		if pod {
			return exact, ap.String()
		}
		return exact, ""
	}
	return onHost, ""
}

// pinned narrows c to the endpoint the app dialled (routedDest.pin in
// ctx) when c has it; otherwise, as when the route sent the request to
// another service or a subset without that pod, c as the route chose it.
func pinned(ctx context.Context, c *upstream.Cluster) *upstream.Cluster {
	d, ok := ctx.Value(ctxKey{}).(routedDest)
	if c == nil || !ok || d.pin == "" {
		return c
	}
	for _, e := range c.Eps {
		if e.Addr == d.pin {
			one := *c
			one.Eps = []*upstream.Endpoint{e}
			return &one
		}
	}
	return c
}

// shownEndpoint is an endpoint as /config shows it.
type shownEndpoint struct {
	Address     string            `json:"address"`
	SPIFFEID    string            `json:"spiffe_id,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	ServicePort uint32            `json:"service_port,omitempty"`
}

// shown is what /config shows of the state's discovery: each service's
// endpoints (by "name.namespace"), and the service each ClusterIP:port
// names.
func (st *meshState) shown() (map[string][]shownEndpoint, map[string]string) {
	eps := make(map[string][]shownEndpoint, len(st.byService))
	for svc, list := range st.byService {
		for _, e := range list {
			s := shownEndpoint{Address: e.Addr, Labels: e.Labels, ServicePort: e.SvcPort}
			if !e.ID.IsZero() {
				s.SPIFFEID = e.ID.String()
			}
			eps[svc.String()] = append(eps[svc.String()], s)
		}
	}
	vips := make(map[string]string, len(st.vips))
	for ap, svc := range st.vips {
		vips[ap.String()] = svc.String()
	}
	return eps, vips
}
