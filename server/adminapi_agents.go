package server

import (
	"net/http"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/audit"
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
// its sidecars' endpoints leave discovery, and only a new join token
// brings the node back. The audit record is written first; if it cannot
// be, nothing changes.
func (s *Server) evictAgent(r *http.Request) (any, error) {
	a, err := s.store.GetAgent(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, storeError(err)
	}
	if err := s.audited(r.Context(), []audit.Event{{Type: audit.AgentEvicted, Actor: "admin", Subject: a.SPIFFEID, Details: map[string]string{"node": a.Node, "serial": a.Serial}}}, func() error {
		return s.store.DeleteAgent(r.Context(), a.SPIFFEID)
	}); err != nil {
		s.log.Error("audited agent eviction failed", "agent_id", a.SPIFFEID, "error", err)
		return nil, storeError(err)
	}
	s.ha.evicted(a.SPIFFEID, s.now()) // never adopted again on its SVIDs of before (k8s_leader.go)
	s.log.Warn("agent evicted", "agent_id", a.SPIFFEID, "node", a.Node)
	s.changes.Notify()
	return wireAgent(a), nil
}
