package server

import (
	"context"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The sidecars each agent reports (ReportProxies), kept as endpoints only
// when the agent's entries let their identities serve the service.

// proxyExpiry is how long an agent's report of its sidecars holds; agents
// report every few seconds, so an endpoint outlives its node by this much.
const proxyExpiry = 20 * time.Second

// allowedServices maps each identity of an agent's entries to the
// services its sidecars may register: the entries' services, or, for an
// entry that names none, the service account of an ID of exactly the form
// spiffe://td/ns/<ns>/sa/<sa> (the Kubernetes convention,
// naming.NamespaceServiceAccount).
func allowedServices(entries []registry.Entry) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, e := range entries {
		set := out[e.SPIFFEID]
		if set == nil {
			set = map[string]bool{}
			out[e.SPIFFEID] = set
		}
		for _, svc := range e.Services {
			set[svc] = true
		}
		if len(e.Services) == 0 {
			if id, err := spiffeid.FromString(e.SPIFFEID); err == nil {
				if _, sa, ok := naming.NamespaceServiceAccount(id); ok {
					set[sa] = true
				}
			}
		}
	}
	return out
}

// ReportProxies records the calling agent's sidecars. A sidecar's endpoint
// is kept only if its identity is one the agent holds an entry for, and
// that entry lets the identity serve the service (see allowedServices):
// otherwise any workload with a mesh identity could register itself as any
// service and receive that service's traffic.
func (s *Server) ReportProxies(ctx context.Context, req *agentv1.ReportProxiesRequest) (*agentv1.ReportProxiesResponse, error) {
	agent, entries, err := s.callerEntries(ctx)
	if err != nil {
		return nil, err
	}
	allowed := allowedServices(entries)
	recs := make([]registry.ProxyRecord, 0, len(req.GetProxies()))
	var refused []audit.Event
	for _, p := range req.GetProxies() {
		reason := ""
		ns, nsErr := proxyNamespace(p)
		if nsErr == nil && !mayServe(allowed, p.GetSpiffeId(), p.GetService(), ns) {
			reason = "its identity may not serve this service"
		} else if err := validLabels(p.GetLabels()); err != nil {
			reason = err.Error()
		} else if nsErr != nil {
			reason = nsErr.Error()
		}
		if reason != "" {
			refused = append(refused, audit.Event{Type: auditEndpointRefused, Actor: agent.String(), Subject: p.GetSpiffeId(),
				Details: map[string]string{"service": p.GetService(), "address": p.GetAddress(), "reason": reason}})
			continue
		}
		recs = append(recs, registry.ProxyRecord{AgentID: agent.String(), ProxyID: p.GetId(), SPIFFEID: p.GetSpiffeId(), Service: p.GetService(),
			Namespace: ns, Address: p.GetAddress(), Labels: p.GetLabels(), ConfigVersion: p.GetConfigVersion()})
	}
	if len(refused) > 0 {
		s.refusedMu.Lock()
		if len(s.refusedSeen) > 10000 {
			s.refusedSeen = map[string]bool{}
		}
		var fresh []audit.Event
		for _, e := range refused {
			key := agent.String() + "|" + e.Subject + "|" + e.Details["service"] + "|" + e.Details["address"]
			if !s.refusedSeen[key] {
				s.refusedSeen[key] = true
				fresh = append(fresh, e)
			}
		}
		s.refusedMu.Unlock()
		// Reports repeat every few seconds; each refusal is recorded once.
		if len(fresh) > 0 {
			if err := s.audit.Append(fresh...); err != nil {
				return nil, status.Error(codes.Unavailable, err.Error())
			}
			for _, e := range fresh {
				s.log.Warn("endpoint refused", "reason", e.Details["reason"], "agent_id", agent.String(), "spiffe_id", e.Subject, "service", e.Details["service"])
			}
		}
	}
	changed, _, err := s.store.ReplaceProxies(ctx, agent.String(), recs, s.now())
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if changed {
		s.changes.Notify()
	}
	return &agentv1.ReportProxiesResponse{}, nil
}

// mayServe reports whether identity id may register an endpoint of
// service in namespace: by a grant "service.namespace", or by a grant
// "service" (or its service account) when namespace is the identity's own
// (the ID's /ns/ segment, else "default"). So an identity without a
// namespace in its ID that claims one (sigil-proxy run --namespace) needs
// a grant naming it: a bare grant never lets it serve prod's reviews.
func mayServe(allowed map[string]map[string]bool, id, service, namespace string) bool {
	if allowed[id][service+"."+namespace] {
		return true
	}
	parsed, err := spiffeid.FromString(id)
	if err != nil {
		return false
	}
	own, err := naming.WorkloadNamespace(parsed, "")
	return err == nil && own == namespace && allowed[id][service]
}

// proxyNamespace is the namespace of a reported sidecar's service: its
// identity's, which the report may not contradict, else the one it
// reports, else "default" (naming.WorkloadNamespace; the agent checked
// it too, and the server trusts no agent more than it must).
func proxyNamespace(p *agentv1.Proxy) (string, error) {
	id, err := spiffeid.FromString(p.GetSpiffeId())
	if err != nil {
		return "", err
	}
	return naming.WorkloadNamespace(id, p.GetNamespace())
}

// validLabels checks a sidecar's labels as Kubernetes does (the agent
// checked them too; the server trusts no agent more than it must).
func validLabels(labels map[string]string) error {
	for k, v := range labels {
		if err := naming.ValidateLabel(k, v); err != nil {
			return err
		}
	}
	return nil
}
