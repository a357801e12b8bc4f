package server

// Agent evictions on Kubernetes: `sigil-server agent evict` on any replica
// writes the eviction to the sigil-agent-evictions ConfigMap (package
// k8s/evictions) before it deletes its own record, and every replica
// follows that ConfigMap: it deletes its own record of the agent, cuts the
// agent's streams, and refuses every SVID of the agent issued at or before
// the eviction, whoever attested it. Before it signs an agent SVID the
// leader reads the agent's entry from the API server itself, since its
// watch may lag. `agent ban` marks the entry banned: no SVID of the agent
// is accepted or signed until `agent unban`. A replica that starts refuses
// agents until it has read the ConfigMap, so a restart remembers. The
// leader prunes evictions no valid SVID can match any more (never bans).
// docs/kubernetes.md, "Eviction" and "Ban", says what holds.

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/k8s/evictions"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// evictionPruneEvery is how often the leader prunes the evictions.
const evictionPruneEvery = time.Minute

// evictionSkewWarn is how far from this replica's clock a newly seen
// eviction may be dated before evictedElsewhere warns: a watch lagging,
// or clocks apart, by more than this.
const evictionSkewWarn = 5 * time.Second

// evictionWriteTimeout bounds an eviction's write to the API server,
// retries included.
const evictionWriteTimeout = 30 * time.Second

// evictionsPart is the "agent evictions" Kubernetes part.
func (s *Server) evictionsPart() kubePart {
	return kubePart{name: "agent evictions", start: s.startEvictions}
}

// startEvictions follows the evictions ConfigMap (returning once it has
// been read) and runs the leader's pruning.
func (s *Server) startEvictions(ctx context.Context, wg *sync.WaitGroup) error {
	cm := s.cfg.Kubernetes.Namespace + "/" + s.ha.evictions.Name()
	done, err := s.ha.evictions.Watch(ctx,
		func(fresh []evictions.Eviction) { s.evictedElsewhere(ctx, fresh) },
		func(bad error) {
			s.log.Error("agent eviction entry not understood; fix or delete it", "configmap", cm, "error", bad)
		})
	if done != nil {
		wg.Add(1)
		go func() { defer wg.Done(); <-done }()
	}
	if err != nil {
		return err
	}
	s.metrics.reg.MustRegister(s.evictionsGauge())
	wg.Add(1)
	go func() { defer wg.Done(); s.pruneEvictionsLoop(ctx, cm) }()
	return nil
}

// evictionsGauge is sigil_server_agent_evictions_bytes.
func (s *Server) evictionsGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sigil_server_agent_evictions_bytes",
		Help: "Size of the agent evictions ConfigMap's data as this replica last read it, in bytes; evictions are refused past " + strconv.Itoa(evictions.MaxBytes) + ".",
	}, func() float64 { return float64(s.ha.evictions.Bytes()) })
}

// evictionLifetime is the longest an agent SVID issued at or before an
// eviction can stay valid after it: the agent SVID TTL plus the NotBefore
// backdate.
func (s *Server) evictionLifetime() time.Duration {
	return s.cfg.AgentX509TTL + ca.MaxBackdate
}

// recordEviction writes the eviction of agent (whose newest SVID this
// replica knows expires at notAfter, zero if unknown) to the ConfigMap,
// dated now. It is the first step of an eviction on Kubernetes: if it
// fails, nothing else is done.
func (s *Server) recordEviction(ctx context.Context, agent string, notAfter time.Time, banned bool) error {
	now := s.now()
	e := evictions.Eviction{Agent: agent, At: now, Replica: s.cfg.Kubernetes.Leader.PodName, Until: now.Add(s.evictionLifetime()), Banned: banned}
	// The newest SVID this replica knows was signed at notAfter-TTL by
	// the leader's clock: if that is after now, this replica's clock is
	// behind the leader's, and the eviction is dated at the signing so
	// that it still covers that SVID.
	if signed := notAfter.Add(-s.cfg.AgentX509TTL); signed.After(e.At) {
		s.log.Warn("agent eviction dated by the leader's signing time: this replica's clock is behind the leader's", "agent_id", agent, "offset", signed.Sub(now).String())
		e.At = signed
	}
	if notAfter.After(e.Until) {
		e.Until = notAfter
	}
	if err := s.ha.evictions.Record(ctx, e); err != nil {
		return fmt.Errorf("server: the eviction was not shared with the other replicas, so nothing was evicted: %w", err)
	}
	return nil
}

// evictedElsewhere applies evictions the ConfigMap holds that this
// replica has not seen yet (made by another replica, or by this one before
// a restart): its own record of each agent goes, unless the agent
// attested again since, and the agents' open streams are checked again,
// which cuts them. An eviction dated more than evictionSkewWarn from now
// is logged: this replica read it late, or the clocks disagree (see
// docs/kubernetes.md, "Eviction").
func (s *Server) evictedElsewhere(ctx context.Context, fresh []evictions.Eviction) {
	s.ha.evictMu.Lock()
	defer s.ha.evictMu.Unlock()
	now := s.now()
	for _, e := range fresh {
		if d := now.Sub(e.At); (d > evictionSkewWarn || d < -evictionSkewWarn) && e.Replica != s.cfg.Kubernetes.Leader.PodName {
			s.log.Warn("agent eviction seen far from its time: this replica's watch lags, or the replicas' clocks disagree (keep them synchronized)", "agent_id", e.Agent, "evicted_by", e.Replica, "evicted_at", e.At, "offset", d.String())
		}
		a, err := s.store.GetAgent(ctx, e.Agent)
		if errors.Is(err, registry.ErrNotFound) || (err == nil && a.AttestedAt.After(e.At)) {
			continue
		}
		if err != nil {
			s.log.Error("agent evicted by another replica: its record here could not be read; its SVIDs are refused all the same", "agent_id", e.Agent, "evicted_by", e.Replica, "error", err)
			continue
		}
		ev := audit.Event{Type: audit.AgentEvicted, Actor: "kubernetes", Subject: a.SPIFFEID, Details: map[string]string{
			"node": a.Node, "serial": a.Serial, "evicted_by": e.Replica, "evicted_at": e.At.UTC().Format(time.RFC3339Nano)}}
		if err := s.audited(ctx, []audit.Event{ev}, func() error { return s.store.DeleteAgent(ctx, a.SPIFFEID) }); err != nil {
			s.log.Error("agent evicted by another replica: its record here was not deleted; its SVIDs are refused all the same", "agent_id", a.SPIFFEID, "evicted_by", e.Replica, "error", err)
			continue
		}
		s.log.Warn("agent evicted by another replica", "agent_id", a.SPIFFEID, "node", a.Node, "evicted_by", e.Replica, "evicted_at", e.At)
	}
	s.changes.Notify() // every stream checks its caller again
}

// refuseEvicted is the eviction check of every agent call on Kubernetes:
// an SVID issued at or before the agent's eviction is refused
// (PermissionDenied, so the agent attests again), and so is every SVID
// until this replica has read the evictions (Unavailable: fail closed,
// the agent tries another replica). On a plain host it passes: there an
// eviction deletes the one record.
func (s *Server) refuseEvicted(id spiffeid.ID, leaf *x509.Certificate) error {
	if s.ha == nil {
		return nil
	}
	if !s.ha.evictions.Synced() {
		return status.Error(codes.Unavailable, "server: this replica has not read the agent evictions yet")
	}
	// NotBefore is backdated from the signing by up to ca.MaxBackdate:
	// comparing it with the eviction errs on refusing (signAgent waits out
	// that window for a new SVID).
	if e, ok := s.ha.evictions.Lookup(id.String()); ok {
		return refuseBy(e, leaf)
	}
	return nil
}

// refuseBy is the refusal of an agent SVID leaf by the agent's eviction
// e: PermissionDenied if the agent is banned, or if leaf was issued at or
// before e.
func refuseBy(e evictions.Eviction, leaf *x509.Certificate) error {
	if e.Banned {
		return status.Errorf(codes.PermissionDenied, "agent %s is banned (since %s, by %s): no SVID is issued to it until sigil-server agent unban", e.Agent, e.At.UTC().Format(time.RFC3339Nano), e.Replica)
	}
	if leaf != nil && !leaf.NotBefore.After(e.At) {
		return status.Errorf(codes.PermissionDenied, "agent %s was evicted at %s (by %s): its SVIDs from before are refused; attest again", e.Agent, e.At.UTC().Format(time.RFC3339Nano), e.Replica)
	}
	return nil
}

// awaitEvictionPast is the eviction check of every agent SVID the leader
// signs. It reads the agent's eviction from the API server itself
// (evictions.Store.Fetch: one GET of the ConfigMap per agent SVID signed;
// agents renew about twice per --agent-x509-ttl, so this is rare), not
// from the watched copy, which may lag behind an eviction made on
// another replica: a renewal from that lag would be dated after the
// eviction and accepted everywhere. A failed read refuses the signing
// (Unavailable: fail closed). A banned agent is refused; so is caller,
// the SVID an agent renews with (nil on attestation), when issued at or
// before the eviction. Otherwise it holds the signing while the new
// SVID's backdated NotBefore would still fall at or before the eviction,
// which refuseEvicted would refuse: until ca.MaxBackdate plus a second
// after it (the second because the registry dates an agent's record in
// whole seconds, and evictedElsewhere must tell a record made after the
// eviction from one made before). It returns early with ctx's error.
func (s *Server) awaitEvictionPast(ctx context.Context, agent string, caller *x509.Certificate) error {
	if s.ha == nil {
		return nil
	}
	e, ok, err := s.ha.evictions.Fetch(ctx, agent, s.now())
	if err != nil {
		return status.Errorf(codes.Unavailable, "server: the agent evictions could not be read, so no agent SVID is signed: %v", err)
	}
	if !ok {
		return nil
	}
	if err := refuseBy(e, caller); err != nil {
		return err
	}
	wait := e.At.Add(ca.MaxBackdate + time.Second).Sub(s.now())
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return status.Errorf(codes.Unavailable, "agent %s was evicted at %s; it may attest again from %s", agent, e.At.UTC().Format(time.RFC3339Nano), e.At.Add(ca.MaxBackdate+time.Second).UTC().Format(time.RFC3339Nano))
	case <-t.C:
		return nil
	}
}

// pruneEvictionsLoop drops, on the leader, the evictions no valid SVID
// can match any more.
func (s *Server) pruneEvictionsLoop(ctx context.Context, cm string) {
	t := time.NewTicker(evictionPruneEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.isLeader() {
			continue
		}
		n, err := s.ha.evictions.Prune(ctx, s.now(), s.evictionLifetime())
		if err != nil {
			s.log.Error("pruning agent evictions failed; the next round retries", "configmap", cm, "error", err)
			continue
		}
		if n > 0 {
			s.log.Info("agent evictions pruned: no valid SVID can match them", "configmap", cm, "dropped", n)
		}
		if b := s.ha.evictions.Bytes(); b > evictions.MaxBytes*3/4 {
			s.log.Warn("agent evictions nearing their size limit: evictions will be refused past it; shorten --agent-x509-ttl", "configmap", cm, "bytes", b, "max_bytes", evictions.MaxBytes)
		}
	}
}
