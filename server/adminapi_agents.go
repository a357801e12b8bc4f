package server

import (
	"net/http"
	"sync"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

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
