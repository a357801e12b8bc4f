package server

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/tap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Queue bounds of the server's part of `sigil tap`; past them messages
// are dropped (and counted), never queued.
const (
	tapToAgent  = 64  // controls waiting for one agent's Tap stream
	tapToClient = 256 // events waiting for one tap's client
)

// tapHub is the server's part of `sigil tap`: the taps the admin API runs
// (their rate and number of events in a tap.Set, as at every hop) and the
// agents' Tap streams controls go down. Its zero value is ready: the maps
// are made at first use.
type tapHub struct {
	mu       sync.Mutex
	set      *tap.Set
	agents   map[string]*tapAgent
	sessions map[string]*tapSession
	closing  chan struct{}
}

// tapAgent is one agent's Tap stream.
type tapAgent struct {
	id   string
	send chan *agentv1.TapControl
}

// tapSession is one running tap.
type tapSession struct {
	control *agentv1.TapControl
	events  chan *agentv1.TapEvent
	// started counts the sidecars that took the tap up; poke wakes the
	// handler to say so.
	started atomic.Int64
	poke    chan struct{}
	dropped atomic.Uint64
	// sentTo holds the agents the tap went to (under tapHub.mu): only
	// their messages for it are taken.
	sentTo map[string]bool
}

func (h *tapHub) initLocked(now func() time.Time) {
	if h.set == nil {
		h.set = tap.NewSet(now)
		h.agents = map[string]*tapAgent{}
		h.sessions = map[string]*tapSession{}
		h.closing = make(chan struct{})
	}
}

// shutdown ends every tap (the server is stopping).
func (h *tapHub) shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing != nil {
		select {
		case <-h.closing:
		default:
			close(h.closing)
		}
	}
}

// done is closed when the server stops.
func (h *tapHub) done(now func() time.Time) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.initLocked(now)
	return h.closing
}

// open starts a tap (a checked control); tap.ErrTooMany past tap.MaxTaps.
func (h *tapHub) open(c *agentv1.TapControl, now func() time.Time) (*tapSession, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.initLocked(now)
	if _, err := h.set.Apply(c); err != nil {
		return nil, err
	}
	s := &tapSession{control: c, events: make(chan *agentv1.TapEvent, tapToClient), poke: make(chan struct{}, 1), sentTo: map[string]bool{}}
	h.sessions[c.GetTapId()] = s
	return s, nil
}

// close ends a tap and tells the agents it went to.
func (h *tapHub) close(s *tapSession) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id := s.control.GetTapId()
	delete(h.sessions, id)
	_, _ = h.set.Apply(&agentv1.TapControl{TapId: id, Stop: true})
	stop := &agentv1.TapControl{TapId: id, Stop: true}
	for agentID := range s.sentTo {
		if a := h.agents[agentID]; a != nil {
			select {
			case a.send <- stop:
			default: // its stream is behind: the tap lapses there on its own
			}
		}
	}
}

// renew sends a tap's control to the agents given (those whose nodes run
// the tapped service's sidecars) and renews it in the server's own set.
// Agents without a Tap stream are skipped: the next renewal reaches them.
func (h *tapHub) renew(s *tapSession, agentIDs []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, _ = h.set.Apply(s.control)
	for _, id := range agentIDs {
		a := h.agents[id]
		if a == nil {
			continue
		}
		s.sentTo[id] = true
		select {
		case a.send <- s.control:
		default:
		}
	}
}

// connect registers an agent's Tap stream; a newer stream of the same
// agent replaces an older one.
func (h *tapHub) connect(agentID string, now func() time.Time) *tapAgent {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.initLocked(now)
	a := &tapAgent{id: agentID, send: make(chan *agentv1.TapControl, tapToAgent)}
	h.agents[agentID] = a
	return a
}

func (h *tapHub) disconnect(a *tapAgent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.agents[a.id] == a {
		delete(h.agents, a.id)
	}
}

// fromAgent takes what an agent sent for a tap: only for a tap the server
// sent that agent, events within the tap's rate and number of events,
// cleaned once more (the server trusts no agent more than it must).
func (h *tapHub) fromAgent(agentID string, up *agentv1.TapUp) {
	h.mu.Lock()
	s := h.sessions[up.GetTapId()]
	ok := s != nil && s.sentTo[agentID]
	h.mu.Unlock()
	if !ok {
		return
	}
	switch {
	case up.GetEvent() != nil:
		if !h.set.Admit(up.GetTapId()) {
			s.dropped.Add(1)
			return
		}
		select {
		case s.events <- tap.Clean(up.GetEvent()):
		default:
			s.dropped.Add(1)
		}
	case up.GetStarted() != nil:
		s.started.Add(int64(min(up.GetStarted().GetSidecars(), 1)))
		select {
		case s.poke <- struct{}{}:
		default:
		}
	}
}

// Tap serves one agent's Tap stream: controls of the taps whose service
// runs on its node go down, its sidecars' events and starts come up.
func (s *Server) Tap(stream agentv1.Agent_TapServer) error {
	ctx := stream.Context()
	agent, err := s.callerAgent(ctx)
	if err != nil {
		return err
	}
	a := s.taps.connect(agent.String(), s.now)
	defer s.taps.disconnect(a)
	recvErr := make(chan error, 1)
	go func() {
		for {
			up, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			s.taps.fromAgent(a.id, up)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		case c := <-a.send:
			// Checked again: an evicted agent loses its stream.
			if _, err := s.callerAgent(ctx); err != nil {
				return err
			}
			if err := stream.Send(c); err != nil {
				return err
			}
		}
	}
}
