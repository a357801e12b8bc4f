package proxy

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// pausedGauge is sigil_audit_recording_paused: 1 while recording is
// paused because the server keeps no audit stream.
func (a *auditRecorder) pausedGauge() prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sigil_audit_recording_paused",
		Help: "1 while the sidecar records no decisions because the server keeps no audit stream (no --audit-export).",
	}, func() float64 {
		if a.paused.Load() {
			return 1
		}
		return 0
	})
}

// auditProbeInterval is how often a paused sidecar asks whether the
// server keeps an audit stream again (an empty batch to the agent).
const auditProbeInterval = 10 * time.Second

// pauseWhileDiscarded stops recording decisions while the server keeps no
// audit stream (it runs without --audit-export and discards what agents
// send): the sidecar would spend a record's CPU on every request for
// nothing. It applies only where the agent is the one target and
// recording is not fail-closed (--audit-failure-mode-allow=false keeps
// recording whatever the server does). While paused, an empty batch every
// auditProbeInterval asks again; the first answer that the server keeps
// the stream resumes recording, so decisions made in the first
// auditProbeInterval after the server starts exporting may be missing.
// Nothing is sealed while paused: the chain has no hole. Returns when ctx
// is done.
func (p *Proxy) pauseWhileDiscarded(ctx context.Context, probe func(context.Context) error) {
	rec := p.recorder
	p.shipper.discarded = func(discarded bool) {
		if rec.paused.Swap(discarded) != discarded {
			if discarded {
				p.log.Info("audit recording paused: the server keeps no audit stream (no --audit-export); asking again periodically", "retry_in", auditProbeInterval.String())
			} else {
				p.log.Info("audit recording resumed: the server keeps an audit stream")
			}
		}
	}
	go func() {
		t := time.NewTicker(auditProbeInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if !rec.paused.Load() {
				continue
			}
			if err := probe(ctx); err != nil && ctx.Err() == nil {
				p.log.Debug("audit probe not answered", "error", err)
			}
		}
	}()
}
