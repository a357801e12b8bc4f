// Package tap holds what every hop of `sigil tap` agrees on: the bounds of
// a tap (events, rate, time to live), the set of taps a hop holds with its
// per-tap rate limit, and the one cleaning every event passes through.
//
// A tap flows as Linkerd's does, but through Sigil's one stream per node:
// the CLI asks the server's admin API; the server sends a TapControl to the
// agents of the nodes that run the service's sidecars (Agent.Tap); each
// agent passes it to its matching sidecars (Discovery stream); sidecars send
// TapUp events back up the same path as requests complete. Each hop holds
// its taps in a Set, which limits each tap to its rate and its number of
// events, and drops a tap that is not renewed within its time to live: a
// tap whose owner vanished stops on its own (fail safe).
//
// An event carries no header, no body and no query string (see Clean).
//
//	set := tap.NewSet(time.Now)
//	started, err := set.Apply(control)
//	for _, id := range set.Sample(r.Method, r.URL.Path) { send(id, event) }
package tap

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
)

// Bounds of a tap. docs/observability.md lists them; api/admin/v1 holds
// the four a client sees (TapDefaultMax...), equal to these (checked by
// TestTapBoundsMatchTheAPI), so that agent and sidecar need not link the
// admin API nor the CLI gRPC.
const (
	// DefaultMaxEvents is a tap's number of events when none is asked for
	// (sigil tap --max); MaxEvents is the most one may ask for.
	DefaultMaxEvents = 100
	MaxEvents        = 10000
	// DefaultRate is a tap's events per second when none is asked for
	// (sigil tap --rate); MaxRate the most one may ask for. Each hop
	// (sidecar, agent, server) lets at most this many through per second.
	DefaultRate = 100
	MaxRate     = 1000
	// TTL is how long a hop keeps a tap that is not renewed; the server
	// renews its taps every RenewEvery while their client is connected.
	TTL        = 10 * time.Second
	RenewEvery = 3 * time.Second
	// MaxTTL bounds the time to live a control may ask for.
	MaxTTL = time.Minute
	// MaxTaps bounds the taps one hop (sidecar, agent, server) holds at
	// once; more are refused.
	MaxTaps = 16
	// MaxIDLength bounds a tap's ID.
	MaxIDLength = 64
	// Field bounds of an event: longer values are cut (path, authority)
	// or dropped (the others).
	maxPath      = 1024
	maxAuthority = 255
	maxToken     = 32
	maxPrincipal = 2048
)

// ErrTooMany means a hop already holds MaxTaps taps.
var ErrTooMany = errors.New("tap: too many taps at once")

// Directions of an event.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// CheckControl checks a control as a hop receives it: an ID, and for a
// start a service, a rate, a number of events and a time to live within
// bounds. A stop needs only the ID.
func CheckControl(c *agentv1.TapControl) error {
	if c == nil {
		return errors.New("tap: no control")
	}
	if id := c.GetTapId(); id == "" || len(id) > MaxIDLength {
		return fmt.Errorf("tap: tap_id of %d bytes: want 1 to %d", len(id), MaxIDLength)
	}
	if c.GetStop() {
		return nil
	}
	m := c.GetMatch()
	if !naming.ValidServiceName(m.GetService()) {
		return fmt.Errorf("tap: service %q: want a DNS label", m.GetService())
	}
	if m.GetNamespace() != "" && !naming.ValidNamespace(m.GetNamespace()) {
		return fmt.Errorf("tap: namespace %q: want a DNS label", m.GetNamespace())
	}
	if len(m.GetPathPrefix()) > maxPath || (m.GetPathPrefix() != "" && !strings.HasPrefix(m.GetPathPrefix(), "/")) {
		return fmt.Errorf("tap: path prefix %q: want an absolute path of at most %d bytes", m.GetPathPrefix(), maxPath)
	}
	if len(m.GetMethod()) > maxToken {
		return fmt.Errorf("tap: method of %d bytes: at most %d", len(m.GetMethod()), maxToken)
	}
	if r := c.GetRate(); r < 1 || r > MaxRate {
		return fmt.Errorf("tap: rate %d: want 1 to %d per second", r, MaxRate)
	}
	if n := c.GetMaxEvents(); n < 1 || n > MaxEvents {
		return fmt.Errorf("tap: max events %d: want 1 to %d", n, MaxEvents)
	}
	if ttl := time.Duration(c.GetTtlMillis()) * time.Millisecond; ttl <= 0 || ttl > MaxTTL {
		return fmt.Errorf("tap: ttl %s: want above 0, at most %s", ttl, MaxTTL)
	}
	return nil
}

// Matches reports whether a request with method and (normalized, query-
// less) path is one m selects.
func Matches(m *agentv1.TapMatch, method, path string) bool {
	return (m.GetMethod() == "" || m.GetMethod() == method) && strings.HasPrefix(path, m.GetPathPrefix())
}

// Clean bounds an event's fields as every hop does before passing it on:
// the path loses any query and is cut to its bound, the authority too;
// a method, protocol or direction that is not a short token is dropped.
// Events have no field for headers, bodies or queries, so none can leak
// through a hop; Clean keeps a sender from smuggling one into a field.
func Clean(ev *agentv1.TapEvent) *agentv1.TapEvent {
	if ev == nil {
		return nil
	}
	path, _, _ := strings.Cut(ev.GetPath(), "?")
	ev.Path = cut(path, maxPath)
	ev.Authority = cut(ev.GetAuthority(), maxAuthority)
	ev.Method = token(ev.GetMethod())
	ev.Protocol = token(ev.GetProtocol())
	if d := ev.GetDirection(); d != Inbound && d != Outbound {
		ev.Direction = ""
	}
	ev.Reporter = cut(ev.GetReporter(), maxPrincipal)
	ev.SourcePrincipal = cut(ev.GetSourcePrincipal(), maxPrincipal)
	ev.DestinationPrincipal = cut(ev.GetDestinationPrincipal(), maxPrincipal)
	ev.DestinationNamespace = cut(ev.GetDestinationNamespace(), 63)
	ev.DestinationService = cut(ev.GetDestinationService(), 63)
	ev.DestinationSubset = cut(ev.GetDestinationSubset(), 253)
	ev.Route = cut(ev.GetRoute(), 253)
	if ev.GetStatus() > 999 {
		ev.Status = 0
	}
	if ev.GetLatencyMicros() < 0 {
		ev.LatencyMicros = 0
	}
	return ev
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// token keeps s if it is a short run of visible ASCII, else "".
func token(s string) string {
	if len(s) > maxToken {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return ""
		}
	}
	return s
}

// Set is the taps one hop holds, safe for concurrent use. Each tap lets
// through at most its rate of events per second (a token bucket holding
// one second's worth) and its number of events, and lapses TTL after its
// last renewal.
type Set struct {
	now    func() time.Time
	active atomic.Int32
	mu     sync.Mutex
	taps   map[string]*held
	// lapsed are the taps dropped for want of renewal since the last
	// Expire, whichever call found them lapsed (at most maxLapsed).
	lapsed []string
}

// maxLapsed bounds the lapsed taps a Set keeps for Expire.
const maxLapsed = 4 * MaxTaps

// held is one tap in a Set.
type held struct {
	control *agentv1.TapControl
	expires time.Time
	left    uint32  // events still to let through
	tokens  float64 // rate bucket
	last    time.Time
}

// NewSet returns an empty set reading time from now.
func NewSet(now func() time.Time) *Set {
	return &Set{now: now, taps: map[string]*held{}}
}

// Active reports whether the set holds any tap: the request path's one
// check when nobody taps.
func (s *Set) Active() bool { return s.active.Load() > 0 }

// Apply takes up a checked control: a stop drops the tap; a start renews a
// tap the set holds (its time to live starts again) or takes up a new one.
// started says the tap is new here. A new tap beyond MaxTaps is refused
// with ErrTooMany.
func (s *Set) Apply(c *agentv1.TapControl) (started bool, err error) {
	if err := CheckControl(c); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expireLocked(now)
	id := c.GetTapId()
	if c.GetStop() {
		delete(s.taps, id)
		s.active.Store(int32(len(s.taps)))
		return false, nil
	}
	expires := now.Add(time.Duration(c.GetTtlMillis()) * time.Millisecond)
	if h := s.taps[id]; h != nil {
		h.expires = expires
		return false, nil
	}
	if len(s.taps) >= MaxTaps {
		return false, ErrTooMany
	}
	s.taps[id] = &held{control: c, expires: expires, left: c.GetMaxEvents(), tokens: float64(c.GetRate()), last: now}
	s.active.Store(int32(len(s.taps)))
	return true, nil
}

// Sample returns the IDs of the taps that take an event for a request
// with method and path: those that match it and have room in their rate
// and number of events, each charged one event.
func (s *Set) Sample(method, path string) []string {
	if !s.Active() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expireLocked(now)
	var out []string
	for id, h := range s.taps {
		if Matches(h.control.GetMatch(), method, path) && h.take(now) {
			out = append(out, id)
		}
	}
	return out
}

// Admit charges tap id one event and reports whether the event may pass:
// false for a tap the set does not hold (never started here, stopped or
// lapsed) or one past its rate or number of events.
func (s *Set) Admit(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expireLocked(now)
	h := s.taps[id]
	return h != nil && h.take(now)
}

// Holds reports whether the set holds tap id.
func (s *Set) Holds(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	return s.taps[id] != nil
}

// Expire drops the taps past their time to live and returns the IDs of
// every tap that lapsed since the last call (whichever call noticed).
func (s *Set) Expire() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	out := s.lapsed
	s.lapsed = nil
	return out
}

// Controls returns the controls of the taps the set holds (to pass on to
// a sidecar that joins later).
func (s *Set) Controls() []*agentv1.TapControl {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	out := make([]*agentv1.TapControl, 0, len(s.taps))
	for _, h := range s.taps {
		out = append(out, h.control)
	}
	return out
}

// Clear drops every tap (the stream that brought them ended).
func (s *Set) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.taps)
	s.active.Store(0)
}

func (s *Set) expireLocked(now time.Time) {
	gone := false
	for id, h := range s.taps {
		if !now.Before(h.expires) {
			delete(s.taps, id)
			if len(s.lapsed) == maxLapsed {
				s.lapsed = s.lapsed[1:]
			}
			s.lapsed = append(s.lapsed, id)
			gone = true
		}
	}
	if gone {
		s.active.Store(int32(len(s.taps)))
	}
}

// take charges one event to h if its bucket and count allow.
func (h *held) take(now time.Time) bool {
	if h.left == 0 {
		return false
	}
	rate := float64(h.control.GetRate())
	if el := now.Sub(h.last).Seconds(); el > 0 {
		h.tokens = min(rate, h.tokens+el*rate)
	}
	h.last = now
	if h.tokens < 1 {
		return false
	}
	h.tokens--
	h.left--
	return true
}
