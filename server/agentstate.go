package server

import (
	"net/http"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/registry"
)

// Agent states in `sigil-server agent list` and GET /v1/agents.
const (
	// AgentActive: the agent's newest SVID is still valid.
	AgentActive = "active"
	// AgentExpired: its newest SVID has expired; the agent cannot renew it
	// and must re-attest with a new join token (README: runbook).
	AgentExpired = "expired"
)

// AgentStatus is an attested agent as the admin API lists it: the stored
// record, whether its SVID is still valid, and when this server last
// heard from it.
type AgentStatus struct {
	registry.Agent
	State string `json:"state"`
	// LastSeen is the agent's last authenticated call to this server
	// process (nil if none since it started).
	LastSeen *time.Time `json:"last_seen,omitempty"`
}

// agentsSeen keeps when each agent last made an authenticated call. It is
// held in memory: a restarted server has not seen anyone yet.
type agentsSeen struct{ m sync.Map }

func (a *agentsSeen) mark(id string, at time.Time) { a.m.Store(id, at) }

func (a *agentsSeen) get(id string) *time.Time {
	v, ok := a.m.Load(id)
	if !ok {
		return nil
	}
	t := v.(time.Time)
	return &t
}

func (s *Server) listAgents(r *http.Request) (any, error) {
	agents, err := s.store.ListAgents(r.Context())
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]AgentStatus, 0, len(agents))
	for _, a := range agents {
		st := AgentStatus{Agent: a, State: AgentActive, LastSeen: s.seen.get(a.SPIFFEID)}
		if !now.Before(a.ExpiresAt) {
			st.State = AgentExpired
		}
		out = append(out, st)
	}
	return out, nil
}
