package relay

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/telemetry"
)

// nodeStats merges the golden metrics the node's sidecars report over
// one interval (telemetry.Merger: bounded keys and denials), and counts
// what became of them.
type nodeStats struct {
	mu sync.Mutex
	m  telemetry.Merger

	refused atomic.Uint64 // series and denials refused from sidecars
	sent    atomic.Uint64 // intervals the server took
	dropped atomic.Uint64 // intervals lost: the server failed or was away

	requestsSent, requestsDropped atomic.Uint64 // the requests those intervals counted
}

// StatsCounts are what became of the node's golden metrics since start.
type StatsCounts struct {
	// Refused counts series and denials sidecars sent that the agent
	// refused: about another identity than the sidecar's own, or out of
	// bounds.
	Refused uint64
	// Sent and Dropped count intervals: reported to the server, or lost
	// because the server did not take them (never retried, never queued).
	Sent, Dropped uint64
	// RequestsSent and RequestsDropped count the requests those
	// intervals' series counted: what the server's figures cover, and
	// what they miss.
	RequestsSent, RequestsDropped uint64
}

// StatsCounts reports the counts since the relay started.
func (r *Relay) StatsCounts() StatsCounts {
	return StatsCounts{Refused: r.stats.refused.Load(), Sent: r.stats.sent.Load(), Dropped: r.stats.dropped.Load(),
		RequestsSent: r.stats.requestsSent.Load(), RequestsDropped: r.stats.requestsDropped.Load()}
}

// addStats merges a report from sidecar p. A sidecar speaks for its own
// side of a request only: a series it reports as source must have its
// attested identity as source principal, one as destination its identity
// as destination principal, and a denial its identity as destination;
// anything else is refused and counted, so no sidecar can report traffic
// in another workload's name.
func (r *Relay) addStats(p *agentv1.Proxy, rep *agentv1.StatsReport) {
	own := &agentv1.StatsReport{Overflow: rep.GetOverflow(), DenialsDropped: rep.GetDenialsDropped()}
	var refused uint64
	for _, s := range rep.GetSeries() {
		k := s.GetKey()
		switch {
		case k.GetReporter() == "source" && k.GetSourcePrincipal() == p.GetSpiffeId(),
			k.GetReporter() == "destination" && k.GetDestinationPrincipal() == p.GetSpiffeId():
			own.Series = append(own.Series, s)
		default:
			refused++
		}
	}
	for _, d := range rep.GetDenials() {
		if d.GetDestinationPrincipal() != p.GetSpiffeId() {
			refused++
			continue
		}
		own.Denials = append(own.Denials, d)
	}
	r.stats.mu.Lock()
	err := r.stats.m.Add(own, nil)
	r.stats.mu.Unlock()
	if err != nil {
		refused++
		r.log.Debug("golden metrics from a sidecar refused", "proxy", p.GetId(), "spiffe_id", p.GetSpiffeId(), "error", err)
	}
	r.stats.refused.Add(refused)
}

// TakeStats returns the node's golden metrics of the interval of length
// interval ending at end, with every sidecar registered now listed, and
// starts the next interval.
func (r *Relay) TakeStats(end time.Time, interval time.Duration) *agentv1.StatsReport {
	r.stats.mu.Lock()
	rep := r.stats.m.Take(end, interval)
	r.stats.mu.Unlock()
	rep.Proxies = r.Proxies()
	return rep
}

// ReportStats sends the node's golden metrics to the server at every tick
// (time.Ticker's channel, the agent's --stats-interval) until ctx is
// done. An interval the server does not take within interval is dropped
// and counted: the agent keeps no backlog, so a server that is away
// costs the intervals it missed and never the agent's memory.
func (r *Relay) ReportStats(ctx context.Context, tick <-chan time.Time, interval time.Duration, send func(context.Context, *agentv1.StatsReport) error) {
	last := time.Now()
	failing := false
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case now = <-tick:
		}
		rep := r.TakeStats(now, now.Sub(last))
		last = now
		if len(rep.Series) == 0 && len(rep.Denials) == 0 && len(rep.Proxies) == 0 {
			continue
		}
		var requests uint64
		for _, s := range rep.Series {
			requests += s.GetRequests()
		}
		callCtx, cancel := context.WithTimeout(ctx, interval)
		err := send(callCtx, rep)
		cancel()
		if err != nil {
			r.stats.dropped.Add(1)
			r.stats.requestsDropped.Add(requests)
			if !failing && ctx.Err() == nil {
				r.log.Warn("golden metrics not taken by the server; dropping intervals until it takes one", "error", err)
			}
			failing = true
			continue
		}
		r.stats.sent.Add(1)
		r.stats.requestsSent.Add(requests)
		if failing {
			r.log.Info("golden metrics reach the server again")
		}
		failing = false
	}
}
