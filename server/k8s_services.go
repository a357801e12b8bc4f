package server

// Discovery from Kubernetes Services and EndpointSlices (package
// k8s/discovery). With --kubernetes, the mesh's services are the
// cluster's: every Service's ready endpoints (pod IP:targetPort, the pod's
// labels, the identity ns/<ns>/sa/<sa> its pod must present) join the
// endpoints the server streams to agents, with the Service's port and
// cluster IPs, which sidecars match transparently captured connections
// against. The endpoints sidecars report through their agents still
// count for services Kubernetes does not know (workloads on VMs beside
// the cluster); for a Kubernetes Service they are dropped, so a pod is
// never listed twice (once by its slice, once by its sidecar) and the
// EndpointSlice, which follows readiness, is the one truth.

import (
	"context"
	"sync"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/api/configdelta"
	"github.com/sigil-mesh/sigil/k8s/discovery"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/server/registry"
)

// servicesPart starts the Services/EndpointSlices/Pods informers (of
// the shared factory: the Pod informer is automatic identity's too); the
// server reads them only once synced.
func (s *Server) servicesPart() kubePart {
	return kubePart{name: "services", start: func(ctx context.Context, _ *sync.WaitGroup) error {
		w := discovery.New(s.kubeInformers, discovery.Options{TrustDomain: s.cfg.td, Log: s.log.With("part", "discovery"), OnChange: s.changes.Notify})
		if err := w.Start(ctx); err != nil {
			return err
		}
		s.kubeServices.Store(w)
		s.changes.Notify()
		return nil
	}}
}

// kubeServicesState is the Kubernetes services view, nil without
// --kubernetes or before its informers synced.
func (s *Server) kubeServicesState() *discovery.State {
	if w := s.kubeServices.Load(); w != nil {
		return w.State()
	}
	return nil
}

// endpointsRevision is the revision of the endpoints agents get: the
// store's (sidecars' reports) plus Kubernetes's. Both only grow, so the
// sum moves whenever either does.
func endpointsRevision(stored int64, k *discovery.State) int64 {
	if k == nil {
		return stored
	}
	return stored + k.Revision
}

// addEndpoints puts the sidecars' reported endpoints and Kubernetes's into
// snap, dropping reports for services Kubernetes has (see above).
func addEndpoints(snap *configdelta.Snapshot, reported []registry.ProxyRecord, k *discovery.State) {
	for _, p := range reported {
		if k != nil && k.Has(naming.Service{Name: p.Service, Namespace: p.Namespace}) {
			continue
		}
		e := &agentv1.Endpoint{Service: p.Service, Namespace: p.Namespace, Address: p.Address, SpiffeId: p.SPIFFEID, Labels: p.Labels}
		snap.Endpoints[configdelta.EndpointKey(e)] = e
	}
	if k == nil {
		return
	}
	for _, eps := range k.Services {
		for _, ep := range eps {
			e := &agentv1.Endpoint{Service: ep.Service.Name, Namespace: ep.Service.Namespace, Address: ep.Address.String(),
				SpiffeId: ep.Identity.String(), Labels: ep.Labels, ServicePort: uint32(ep.ServicePort), Protocol: ep.Protocol}
			for _, ip := range ep.ClusterIPs {
				e.ClusterIps = append(e.ClusterIps, ip.String())
			}
			snap.Endpoints[configdelta.EndpointKey(e)] = e
		}
	}
}
