package proxy

import (
	"context"
	"log/slog"
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
	log *slog.Logger
}

func newTapper(now func() time.Time, log *slog.Logger) *tapper {
	return &tapper{set: tap.NewSet(now), out: make(chan *agentv1.TapUp, tapQueue), log: log}
}

// record offers one completed request to the taps. With no tap running it
// costs one atomic load. The event is built from the request's record
// (identities, service, subset, route, status) and its method, host and
// path; it carries no header, body or query (tap.Clean).
func (t *tapper) record(p *Proxy, rec *requestRecord, r *http.Request, start time.Time, took time.Duration) {
	if t == nil || !t.set.Active() {
		return
	}
	ids := t.set.Sample(r.Method, r.URL.Path)
	if len(ids) == 0 {
		return
	}
	direction := tap.Outbound
	if rec.reporter == reporterDestination {
		direction = tap.Inbound
	}
	ev := &agentv1.TapEvent{
		UnixNanos: start.UnixNano(), Direction: direction, Reporter: p.id.id.String(), Method: r.Method, Authority: r.Host,
		Path: r.URL.Path, Protocol: rec.protocol, Status: uint32(max(rec.code, 0)), LatencyMicros: took.Microseconds(),
		SourcePrincipal: rec.source, DestinationPrincipal: rec.dest,
		DestinationNamespace: rec.service.Namespace, DestinationService: rec.service.Name,
		DestinationSubset: rec.subset, Route: rec.route,
	}
	if rec.service.IsZero() {
		ev.DestinationService = rec.host
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
func (t *tapper) control(c *agentv1.TapControl) {
	held := t.set.Holds(c.GetTapId())
	started, err := t.set.Apply(c)
	if err != nil {
		t.log.Warn("tap refused", "tap_id", c.GetTapId(), "error", err)
		return
	}
	if held && c.GetStop() {
		t.log.Info("tap stopped", "tap_id", c.GetTapId())
	}
	if started {
		t.log.Info("tap started", "tap_id", c.GetTapId(), "path", c.GetMatch().GetPathPrefix(), "method", c.GetMatch().GetMethod())
		select {
		case t.out <- &agentv1.TapUp{TapId: c.GetTapId(), Msg: &agentv1.TapUp_Started{Started: &agentv1.TapStarted{Sidecars: 1}}}:
		default:
		}
	}
}

// pump sends the queued tap messages up the stream (holding mu, which
// the stream's other senders share) until ctx is done or a send fails,
// then ends every tap: they came on this stream.
func (t *tapper) pump(ctx context.Context, mu *sync.Mutex, send func(*proxyv1.DiscoveryRequest) error) {
	defer func() {
		if t.set.Active() {
			t.log.Info("taps stopped: their stream ended", "taps", len(t.set.Controls()))
		}
		t.set.Clear()
	}()
	expire := time.NewTicker(time.Second)
	defer expire.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-expire.C:
			for _, id := range t.set.Expire() {
				t.log.Info("tap lapsed: not renewed", "tap_id", id)
			}
		case up := <-t.out:
			mu.Lock()
			err := send(&proxyv1.DiscoveryRequest{Msg: &proxyv1.DiscoveryRequest_Tap{Tap: up}})
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}
}
