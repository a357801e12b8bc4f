package server

import (
	"context"
	"errors"
	"net/http"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/k8s/evictions"
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
	return s.removeAgent(r, false)
}

// Audit event types of agent bans (never renamed).
const (
	auditAgentBanned   = "agent.banned"
	auditAgentUnbanned = "agent.unbanned"
)

// banAgent is POST /v1/agents/{id}/ban, as spire-server agent ban: the
// agent is evicted, and no replica issues it an SVID again, whatever it
// attests with (a k8s_psat agent re-attests by itself with its projected
// token seconds after an eviction), until unbanAgent. Kubernetes only: the
// ban is an entry of the evictions ConfigMap (k8s_evictions.go) that
// pruning keeps; on a plain host join tokens are single use, so an
// evicted node returns only with a token an admin creates.
func (s *Server) banAgent(r *http.Request) (any, error) {
	if s.ha == nil {
		return nil, adminv1.Errorf(http.StatusBadRequest, "agent ban needs --kubernetes: on a plain host evict the agent; it returns only with a new join token (sigil-server token generate)")
	}
	return s.removeAgent(r, true)
}

// unbanAgent is DELETE /v1/agents/{id}/ban: the agent may attest again.
// Its SVIDs from before the ban stay refused. 404 when it is not banned.
func (s *Server) unbanAgent(r *http.Request) (any, error) {
	if s.ha == nil {
		return nil, adminv1.Errorf(http.StatusBadRequest, "agent unban needs --kubernetes: bans exist only there")
	}
	ctx := r.Context()
	id, err := spiffeid.FromString(r.PathValue("id"))
	if err != nil || !naming.IsAgentID(s.cfg.td, id) {
		return nil, adminv1.Errorf(http.StatusBadRequest, "%q is not an agent SPIFFE ID of trust domain %s", r.PathValue("id"), s.cfg.td)
	}
	_, node, _ := naming.AgentNode(id)
	details := map[string]string{"node": node, "unbanned_by": s.cfg.Kubernetes.Leader.PodName}
	if err := s.audited(ctx, []audit.Event{{Type: auditAgentUnbanned, Actor: "admin", Subject: id.String(), Details: details}}, func() error {
		rctx, cancel := context.WithTimeout(ctx, evictionWriteTimeout)
		defer cancel()
		err := s.ha.evictions.Unban(rctx, id.String(), s.now())
		switch {
		case errors.Is(err, evictions.ErrNotBanned):
			return adminv1.Errorf(http.StatusNotFound, "agent %s is not banned", id)
		case err != nil:
			return adminv1.Errorf(http.StatusServiceUnavailable, "server: the ban was not lifted: %v", err)
		}
		return nil
	}); err != nil {
		return nil, storeError(err)
	}
	s.log.Warn("agent unbanned", "agent_id", id.String(), "node", node)
	return adminv1.Agent{SPIFFEID: id.String(), Node: node}, nil
}

// removeAgent is evictAgent, and with ban banAgent.
func (s *Server) removeAgent(r *http.Request, ban bool) (any, error) {
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
	events := []audit.Event{{Type: audit.AgentEvicted, Actor: "admin", Subject: a.SPIFFEID, Details: details}}
	if ban {
		events = append(events, audit.Event{Type: auditAgentBanned, Actor: "admin", Subject: a.SPIFFEID, Details: details})
	}
	if err := s.audited(ctx, events, func() error {
		if s.ha != nil {
			rctx, cancel := context.WithTimeout(ctx, evictionWriteTimeout)
			defer cancel()
			if err := s.recordEviction(rctx, a.SPIFFEID, a.ExpiresAt, ban); err != nil {
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
	s.log.Warn("agent evicted", "agent_id", a.SPIFFEID, "node", a.Node, "banned", ban)
	s.changes.Notify()
	return wireAgent(a), nil
}

// banHolds says whether the evictions ConfigMap holds what an
// agent.banned or agent.unbanned intent describes: the agent banned, or
// not (no entry, or one not banned). Without --kubernetes there are no
// bans.
func (s *Server) banHolds(ctx context.Context, e audit.Event) (bool, error) {
	if s.ha == nil {
		return false, nil
	}
	ev, ok, err := s.ha.evictions.Fetch(ctx, e.Subject, s.now())
	if err != nil {
		return false, err
	}
	return (ok && ev.Banned) == (e.Type == auditAgentBanned), nil
}
