package relay

import (
	"sync"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/tap"
)

// Queue bounds of the agent's part of `sigil tap`. Past them messages are
// dropped, never queued: a tap is a sample, and a slow server or sidecar
// must not hold up a request or the configuration.
const (
	tapToSidecar = 16  // controls waiting for one sidecar's stream
	tapToServer  = 512 // events and starts waiting for the server's stream
)

// taps is the agent's part of `sigil tap`: the node's taps (package tap's
// Set, with each tap's rate and number of events, and its time to live),
// the sidecar streams controls go down, and the queue of what goes up to
// the server.
type taps struct {
	set *tap.Set
	up  chan *agentv1.TapUp

	mu       sync.Mutex
	sidecars map[*agentv1.Proxy]chan *agentv1.TapControl
}

func newTaps(now func() time.Time) *taps {
	return &taps{set: tap.NewSet(now), up: make(chan *agentv1.TapUp, tapToServer), sidecars: map[*agentv1.Proxy]chan *agentv1.TapControl{}}
}

// selects reports whether a tap's match names the service of sidecar p.
func selects(c *agentv1.TapControl, p *agentv1.Proxy) bool {
	m := c.GetMatch()
	return m.GetService() == p.GetService() && (m.GetNamespace() == "" || m.GetNamespace() == p.GetNamespace())
}

// join registers a sidecar's stream and returns the channel of controls
// for it, holding those of the taps already running that select it.
func (t *taps) join(p *agentv1.Proxy) chan *agentv1.TapControl {
	ch := make(chan *agentv1.TapControl, tapToSidecar)
	for _, c := range t.set.Controls() {
		if selects(c, p) {
			select {
			case ch <- c:
			default:
			}
		}
	}
	t.mu.Lock()
	t.sidecars[p] = ch
	t.mu.Unlock()
	return ch
}

func (t *taps) leave(p *agentv1.Proxy) {
	t.mu.Lock()
	delete(t.sidecars, p)
	t.mu.Unlock()
}

// forward sends c to every sidecar it selects (a stop to every sidecar:
// its match is not carried).
func (t *taps) forward(c *agentv1.TapControl) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, ch := range t.sidecars {
		if c.GetStop() || selects(c, p) {
			select {
			case ch <- c:
			default: // that sidecar's stream is behind; a renewal follows
			}
		}
	}
}

// fromSidecar takes a tap message a sidecar sent: an event of a tap the
// node holds, within the tap's rate and number of events, leaves with the
// reporter set to the identity the agent attested for the sidecar (not
// the one it claims), cleaned (tap.Clean); a start is passed on.
// Anything else is dropped.
func (t *taps) fromSidecar(p *agentv1.Proxy, up *agentv1.TapUp) {
	switch {
	case up.GetEvent() != nil:
		if !t.set.Admit(up.GetTapId()) {
			return
		}
		up.GetEvent().Reporter = p.GetSpiffeId()
		if up.GetEvent().GetDirection() == tap.Inbound {
			up.GetEvent().DestinationPrincipal = p.GetSpiffeId()
		}
		tap.Clean(up.GetEvent())
	case up.GetStarted() != nil:
		if !t.set.Holds(up.GetTapId()) {
			return
		}
		up.GetStarted().Sidecars = 1
	default:
		return
	}
	select {
	case t.up <- up:
	default:
	}
}

// TapControl takes up a tap control from the server and passes it to the
// node's sidecars of the tapped service. A control the tap package
// refuses (bounds, or too many taps) is dropped and returned as an error.
func (r *Relay) TapControl(c *agentv1.TapControl) error {
	if _, err := r.taps.set.Apply(c); err != nil {
		return err
	}
	r.taps.forward(c)
	return nil
}

// ExpireTaps drops the taps the server stopped renewing (it went away, or
// its client did) and tells the sidecars to stop them.
func (r *Relay) ExpireTaps() {
	for _, id := range r.taps.set.Expire() {
		r.taps.forward(&agentv1.TapControl{TapId: id, Stop: true})
	}
}

// TapUp is the queue of tap events and starts for the server.
func (r *Relay) TapUp() <-chan *agentv1.TapUp { return r.taps.up }
