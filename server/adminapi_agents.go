package server

import (
	"context"
	"errors"
	"net/http"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// listAgents is GET /v1/agents: every attested agent, whether its SVID is
// still valid, and when it last called this server process.
func (s *Server) listAgents(r *http.Request) (any, error) {
	agents, err := s.store.ListAgents(r.Context())
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]adminv1.AgentStatus, 0, len(agents))
	for _, a := range agents {
		st := adminv1.AgentStatus{Agent: wireAgent(a), State: adminv1.AgentActive, LastSeen: s.seen.get(a.SPIFFEID)}
		if !now.Before(a.ExpiresAt) {
			st.State = adminv1.AgentExpired
		}
		out = append(out, st)
	}
	return out, nil
}

// evictAgent removes an attested agent, as spire-server agent evict does:
// its next call (and its open Sync stream, woken by the change) is refused,
// its sidecars' endpoints leave discovery, and only a new attestation
// brings the node back. The audit record is written first; if it cannot
// be, nothing changes. On Kubernetes the eviction holds on every replica
// and across restarts: it is written to the API server first
// (k8s_evictions.go), and if that fails the eviction fails and this
// replica's record stays; an agent this replica never saw is evicted by
// its ID all the same, since another replica may know it.
func (s *Server) evictAgent(r *http.Request) (any, error) {
	ctx := r.Context()
	if s.ha != nil {
		s.ha.evictMu.Lock()
		defer s.ha.evictMu.Unlock()
	}
	a, err := s.store.GetAgent(ctx, r.PathValue("id"))
	local := err == nil
	if errors.Is(err, registry.ErrNotFound) && s.ha != nil {
		id, perr := spiffeid.FromString(r.PathValue("id"))
		_, node, ok := naming.AgentNode(id)
		if perr == nil && ok && naming.IsAgentID(s.cfg.td, id) {
			a, err = registry.Agent{SPIFFEID: id.String(), Node: node}, nil
		}
	}
	if err != nil {
		return nil, storeError(err)
	}
	details := map[string]string{"node": a.Node, "serial": a.Serial}
	if s.ha != nil {
		details["evicted_by"] = s.cfg.Kubernetes.Leader.PodName
	}
	if err := s.audited(ctx, []audit.Event{{Type: audit.AgentEvicted, Actor: "admin", Subject: a.SPIFFEID, Details: details}}, func() error {
		if s.ha != nil {
			rctx, cancel := context.WithTimeout(ctx, evictionWriteTimeout)
			defer cancel()
			if err := s.recordEviction(rctx, a.SPIFFEID, a.ExpiresAt); err != nil {
				return adminv1.Errorf(http.StatusServiceUnavailable, "%v", err)
			}
		}
		if !local {
			return nil
		}
		return s.store.DeleteAgent(ctx, a.SPIFFEID)
	}); err != nil {
		s.log.Error("audited agent eviction failed", "agent_id", a.SPIFFEID, "error", err)
		return nil, storeError(err)
	}
	s.log.Warn("agent evicted", "agent_id", a.SPIFFEID, "node", a.Node)
	s.changes.Notify()
	return wireAgent(a), nil
}
