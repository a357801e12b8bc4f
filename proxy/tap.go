package proxy

import (
	"context"
	"net/http"
	"sync"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/tap"
)

// tapQueue bounds the tap messages waiting for the Discovery stream; past
// it, events are dropped, never queued (a tap is a sample).
const tapQueue = 256

// tapper is the sidecar's side of `sigil tap`: the taps its agent started
// on it (package tap's Set: match, rate, number of events, time to live),
// and the events waiting to go up the Discovery stream. A tap belongs to
// the stream that brought it: when that stream ends, every tap ends.
type tapper struct {
	set *tap.Set
	out chan *agentv1.TapUp
}

func newTapper(now func() time.Time) *tapper {
	return &tapper{set: tap.NewSet(now), out: make(chan *agentv1.TapUp, tapQueue)}
}

// record offers one completed request to the taps. With no tap running it
// costs one atomic load. It builds the event from what the request path
// knew; the event carries no header, body or query (tap.Clean).
func (t *tapper) record(p *Proxy, direction, source, service string, r *http.Request, status int, proto string, start time.Time, took time.Duration) {
	if t == nil || !t.set.Active() {
		return
	}
	ids := t.set.Sample(r.Method, r.URL.Path)
	if len(ids) == 0 {
		return
	}
	own := p.id.id.String()
	ev := &agentv1.TapEvent{
		UnixNanos: start.UnixNano(), Direction: direction, Reporter: own, Method: r.Method, Authority: r.Host,
		Path: r.URL.Path, Protocol: proto, Status: uint32(max(status, 0)), LatencyMicros: took.Microseconds(),
		SourcePrincipal: source, DestinationService: service,
	}
	if direction == tap.Inbound {
		ev.DestinationPrincipal = own
		ev.DestinationNamespace = p.names.Namespace()
	}
	tap.Clean(ev)
	for _, id := range ids {
		select {
		case t.out <- &agentv1.TapUp{TapId: id, Msg: &agentv1.TapUp_Event{Event: ev}}:
		default: // the stream is behind: drop, never block a request
		}
	}
}

// control takes up a control from the agent; a tap new here is
// acknowledged up the stream, so the tap's owner knows it runs.
func (t *tapper) control(p *Proxy, c *agentv1.TapControl) {
	started, err := t.set.Apply(c)
	if err != nil {
		p.log.Warn("tap refused", "tap_id", c.GetTapId(), "error", err)
		return
	}
	if started {
		p.log.Info("tap started", "tap_id", c.GetTapId(), "path", c.GetMatch().GetPathPrefix(), "method", c.GetMatch().GetMethod())
		select {
		case t.out <- &agentv1.TapUp{TapId: c.GetTapId(), Msg: &agentv1.TapUp_Started{Started: &agentv1.TapStarted{Sidecars: 1}}}:
		default:
		}
	}
}

// pump sends the queued tap messages up the stream until ctx is done or a
// send fails, then ends every tap: they came on this stream.
func (t *tapper) pump(ctx context.Context, send func(*proxyv1.DiscoveryRequest) error) {
	defer t.set.Clear()
	expire := time.NewTicker(time.Second)
	defer expire.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-expire.C:
			t.set.Expire()
		case up := <-t.out:
			if err := send(&proxyv1.DiscoveryRequest{Msg: &proxyv1.DiscoveryRequest_Tap{Tap: up}}); err != nil {
				return
			}
		}
	}
}

// lockedSend makes a stream's Send safe for the goroutines that share it
// (acknowledgements and taps).
func lockedSend(stream proxyv1.Discovery_StreamClient) func(*proxyv1.DiscoveryRequest) error {
	var mu sync.Mutex
	return func(m *proxyv1.DiscoveryRequest) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(m)
	}
}
