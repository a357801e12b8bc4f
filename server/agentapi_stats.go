package server

import (
	"context"
	"errors"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/telemetry/window"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Golden metrics from agents (ReportStats), kept in the window of
// telemetry/window.
//
// Trust model: an agent reports its own node. Its sidecars count, the
// agent merges, and the server believes an agent about the workloads it
// holds entries for, no more: a series counted by a destination must name
// as destination an identity of the agent's entries that may serve the
// destination service (as ReportProxies checks endpoints); a series
// counted by a source must name as source an identity of the agent's
// entries; a denial must come from one of its identities; a sidecar
// counted as meshed must be one it could register. Anything else is
// dropped and logged, so an agent cannot invent traffic to or from
// another node's workloads. What a caller's identity was on a destination
// series is the destination sidecar's word (the mTLS handshake it saw),
// which only that node can give.

// ReportStats merges the calling agent's report into the window. A
// malformed report (window.ValidateReport) is refused whole with
// InvalidArgument; series, denials and sidecars the agent may not speak
// for are dropped.
func (s *Server) ReportStats(ctx context.Context, req *agentv1.StatsReport) (*agentv1.ReportStatsResponse, error) {
	agent, err := s.callerAgent(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.acceptStats(ctx, agent.String(), req); err != nil {
		return nil, err
	}
	return &agentv1.ReportStatsResponse{}, nil
}

// acceptStats is ReportStats for an authenticated agent.
func (s *Server) acceptStats(ctx context.Context, agent string, req *agentv1.StatsReport) error {
	if err := window.ValidateReport(req); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	entries, err := s.agentEntries(ctx, agent)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	allowed := allowedServices(entries)
	kept := &agentv1.StatsReport{EndUnixNanos: req.GetEndUnixNanos(), IntervalMillis: req.GetIntervalMillis(), Overflow: req.GetOverflow()}
	dropped := 0
	for _, se := range req.GetSeries() {
		k := se.GetKey()
		ok := false
		switch k.GetReporter() {
		case window.ReporterDestination:
			ok = mayServe(allowed, k.GetDestinationPrincipal(), k.GetDestinationService(), k.GetDestinationNamespace())
		case window.ReporterSource:
			_, ok = allowed[k.GetSourcePrincipal()]
		}
		if !ok {
			dropped++
			continue
		}
		kept.Series = append(kept.Series, se)
	}
	for _, d := range req.GetDenials() {
		if !mayServe(allowed, d.GetDestinationPrincipal(), d.GetDestinationService(), d.GetDestinationNamespace()) {
			dropped++
			continue
		}
		kept.Denials = append(kept.Denials, d)
	}
	for _, p := range req.GetProxies() {
		ns, err := proxyNamespace(p)
		if err != nil || !mayServe(allowed, p.GetSpiffeId(), p.GetService(), ns) {
			dropped++
			continue
		}
		kept.Proxies = append(kept.Proxies, &agentv1.Proxy{Id: p.GetId(), SpiffeId: p.GetSpiffeId(), Service: p.GetService(), Namespace: ns})
	}
	if dropped > 0 {
		s.log.Warn("stats report: dropped what the agent may not speak for", "agent_id", agent, "dropped", dropped)
	}
	full, err := s.stats.Add(agent, kept)
	if err != nil {
		if errors.Is(err, window.ErrBadReport) {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		return status.Error(codes.Internal, err.Error())
	}
	if full > 0 {
		// Once a minute at most: a full window stays full while the
		// traffic that filled it lasts.
		now := s.now().Unix()
		if last := s.statsFullWarned.Load(); now-last >= 60 && s.statsFullWarned.CompareAndSwap(last, now) {
			s.log.Warn("stats window full: series of new keys dropped", "agent_id", agent, "dropped", full, "max_keys", s.cfg.StatsMaxKeys)
		}
	}
	return nil
}
