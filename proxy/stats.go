package proxy

import (
	"context"
	"sync"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
)

// statsOutbox holds at most one golden-metrics report waiting for the
// Discovery stream: a report the stream does not take before the next
// interval ends is dropped (and counted), never queued, so a sidecar cut
// off from its agent holds one interval's report at most.
type statsOutbox chan *agentv1.StatsReport

// statsLoop ends an interval every interval until ctx is done (ticks from
// tick, time.Ticker's channel in production) and hands its report to the
// outbox; an empty interval sends nothing.
func (p *Proxy) statsLoop(ctx context.Context, tick <-chan time.Time, out statsOutbox) {
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick:
			rep := p.metrics.stats.Swap(now)
			if len(rep.Series) == 0 && len(rep.Denials) == 0 && rep.Overflow == 0 {
				continue
			}
			select {
			case out <- rep:
			default:
				p.metrics.statsReports.WithLabelValues("dropped").Inc()
			}
		}
	}
}

// sendStats sends the outbox's reports on a Discovery stream until ctx is
// done or a send fails; send is the stream's Send, which mu serializes
// with the stream's other senders.
func (p *Proxy) sendStats(ctx context.Context, out statsOutbox, mu *sync.Mutex, send func(*proxyv1.DiscoveryRequest) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case rep := <-out:
			mu.Lock()
			err := send(&proxyv1.DiscoveryRequest{Msg: &proxyv1.DiscoveryRequest_Stats{Stats: rep}})
			mu.Unlock()
			if err != nil {
				p.metrics.statsReports.WithLabelValues("dropped").Inc()
				return
			}
			p.metrics.statsReports.WithLabelValues("sent").Inc()
		}
	}
}
