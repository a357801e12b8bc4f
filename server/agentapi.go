package server

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/api/configdelta"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Attestor names used in agent IDs.
const AttestorJoinToken = "join_token"

// MaxBatch bounds the CSRs of one BatchNewX509SVID call.
const MaxBatch = 1000

var _ agentv1.AgentServer = (*Server)(nil)

func (s *Server) verifyPeer(raw [][]byte) (spiffeid.ID, error) {
	id, _, err := x509svid.ParseAndVerify(raw, s.ca.Bundle().X509Bundle(), x509svid.WithTime(s.now()))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("server: peer certificate: %w", err)
	}
	return id, nil
}

// callerAgent returns the ID of the agent on the other end of the call: a
// verified agent SVID of our trust domain, for an agent still registered.
func (s *Server) callerAgent(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "an agent SVID is required for this call")
	}
	raw := make([][]byte, len(info.State.PeerCertificates))
	for i, c := range info.State.PeerCertificates {
		raw[i] = c.Raw
	}
	// Checked again here, not only at the handshake, because streams outlive
	// certificates.
	id, err := s.verifyPeer(raw)
	if err != nil {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, err.Error())
	}
	if !naming.IsAgentID(s.cfg.td, id) {
		return spiffeid.ID{}, status.Errorf(codes.PermissionDenied, "%s is not an agent identity", id)
	}
	if err := s.refuseEvicted(id, info.State.PeerCertificates[0]); err != nil { // k8s_evictions.go
		return spiffeid.ID{}, err
	}
	_, err = s.store.GetAgent(ctx, id.String())
	if errors.Is(err, registry.ErrNotFound) {
		err = s.adoptAgent(ctx, id, info.State.PeerCertificates[0]) // k8s_leader.go
	}
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return spiffeid.ID{}, status.Errorf(codes.PermissionDenied, "agent %s is not registered", id)
		}
		return spiffeid.ID{}, status.Error(codes.Unavailable, err.Error())
	}
	s.seen.mark(id.String(), s.now())
	return id, nil
}

// HashJoinToken is how join tokens are stored: only their SHA-256.
func HashJoinToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Attest exchanges a join token, or with --kubernetes a projected
// service-account token (k8s_psat.go), for an agent SVID.
func (s *Server) Attest(ctx context.Context, req *agentv1.AttestRequest) (*agentv1.AttestResponse, error) {
	if err := s.leaderOnly(); err != nil {
		return nil, err
	}
	now := s.now()
	switch {
	case req.GetJoinToken() != "" && req.GetK8SPsatToken() != "":
		return nil, status.Error(codes.InvalidArgument, "give one of join_token and k8s_psat_token, not both")
	case req.GetK8SPsatToken() != "":
		return s.attestPSAT(ctx, req, now)
	case req.GetJoinToken() == "":
		return nil, status.Error(codes.InvalidArgument, "join_token or k8s_psat_token is required")
	}
	pub, err := ca.ParseCSR(req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	hash := HashJoinToken(req.GetJoinToken())
	node, err := s.store.UseJoinToken(ctx, hash, now)
	if err != nil {
		reason := "unknown join token"
		switch {
		case errors.Is(err, registry.ErrTokenUsed):
			reason = "join token already used"
		case errors.Is(err, registry.ErrTokenExpired):
			reason = "join token expired"
		case !errors.Is(err, registry.ErrNotFound):
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		if aerr := s.audit.Append(audit.Event{Type: audit.AgentRefused, Actor: peerAddr(ctx), Details: map[string]string{"reason": reason, "node": node, "token_sha256": hash[:16]}}); aerr != nil {
			return nil, status.Error(codes.Unavailable, aerr.Error())
		}
		s.log.Warn("agent attestation refused", "reason", reason, "node", node, "peer", peerAddr(ctx))
		return nil, status.Error(codes.PermissionDenied, reason)
	}
	id, err := naming.AgentID(s.cfg.td, AttestorJoinToken, node)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	agent := registry.Agent{SPIFFEID: id.String(), Attestor: AttestorJoinToken, Node: node, AttestedAt: now}
	svid, err := s.signAgent(ctx, agent, nil, pub, audit.Event{Type: audit.TokenUsed, Actor: id.String(), Details: map[string]string{"node": node, "token_sha256": hash[:16]}}, audit.AgentAttested, nil)
	if err != nil {
		return nil, err
	}
	s.seen.mark(id.String(), now)
	s.log.Info("agent attested", "agent_id", id.String(), "node", node)
	return &agentv1.AttestResponse{Svid: svid, Bundle: s.bundleProto()}, nil
}

// RenewAgent signs a fresh SVID for the calling agent.
func (s *Server) RenewAgent(ctx context.Context, req *agentv1.RenewAgentRequest) (*agentv1.RenewAgentResponse, error) {
	if err := s.leaderOnly(); err != nil {
		return nil, err
	}
	id, err := s.callerAgent(ctx)
	if err != nil {
		return nil, err
	}
	pub, err := ca.ParseCSR(req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	agent, err := s.store.GetAgent(ctx, id.String())
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	svid, err := s.signAgent(ctx, agent, callerLeaf(ctx), pub, audit.Event{}, audit.AgentRenewed, nil)
	if err != nil {
		return nil, err
	}
	return &agentv1.RenewAgentResponse{Svid: svid}, nil
}

// callerLeaf is the leaf of the TLS peer's certificate chain, nil when
// there is none (callerAgent has checked it before).
func callerLeaf(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil
	}
	return info.State.PeerCertificates[0]
}

// signAgent signs an SVID for agent (its SPIFFEID, Attestor, Node and
// AttestedAt set) and records it: first, if given, then an eventType
// event with the serial, expiry and details. caller is the agent SVID a
// renewal presents, nil on attestation: the agent's eviction is checked
// against it as the API server holds it now (awaitEvictionPast).
func (s *Server) signAgent(ctx context.Context, agent registry.Agent, caller *x509.Certificate, pub crypto.PublicKey, first audit.Event, eventType string, details map[string]string) (*agentv1.X509SVID, error) {
	id, err := spiffeid.FromString(agent.SPIFFEID)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := s.awaitEvictionPast(ctx, agent.SPIFFEID, caller); err != nil { // k8s_evictions.go
		return nil, err
	}
	chain, err := s.ca.SignX509SVID(pub, id, s.cfg.AgentX509TTL)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	serial := chain[0].SerialNumber.Text(16)
	event := audit.Event{Type: eventType, Actor: id.String(), Subject: id.String(), Details: map[string]string{"serial": serial, "not_after": chain[0].NotAfter.UTC().Format(time.RFC3339)}}
	maps.Copy(event.Details, details)
	events := []audit.Event{event}
	// first (token.used) records a change already made, so it is a plain
	// record, not an intent.
	if first.Type != "" {
		if err := s.audit.Append(first); err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
	}
	// Recorded before the SVID is handed out: no record, no SVID.
	if err := s.audited(ctx, events, func() error {
		agent.Serial, agent.ExpiresAt = serial, chain[0].NotAfter
		return s.store.SaveAgent(ctx, agent, s.now())
	}); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return svidProto(id, chain), nil
}

func svidProto(id spiffeid.ID, chain []*x509.Certificate) *agentv1.X509SVID {
	out := &agentv1.X509SVID{SpiffeId: id.String(), ExpiresAt: chain[0].NotAfter.Unix()}
	for _, c := range chain {
		out.CertChain = append(out.CertChain, c.Raw)
	}
	return out
}

// entryFor returns the entry with this ID if the calling agent is its
// parent. Any other case is the same refusal, so an agent learns nothing
// about other nodes' entries.
func (s *Server) entryFor(ctx context.Context, agent spiffeid.ID, entryID string) (registry.Entry, error) {
	e, err := s.getEntry(ctx, entryID)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return registry.Entry{}, status.Error(codes.Unavailable, err.Error())
	}
	if err != nil || e.ParentID != agent.String() {
		return registry.Entry{}, status.Errorf(codes.PermissionDenied, "entry %q is not an entry of agent %s", entryID, agent)
	}
	return e, nil
}

// BatchNewX509SVID signs a CSR for each entry the caller names. A refused
// CSR does not spoil the others; a failure to audit fails the whole call.
// The caller's entries are read once per batch, and CSRs are checked and
// signed on every core (see bench/README.md for the rate).
func (s *Server) BatchNewX509SVID(ctx context.Context, req *agentv1.BatchNewX509SVIDRequest) (*agentv1.BatchNewX509SVIDResponse, error) {
	if err := s.leaderOnly(); err != nil {
		return nil, err
	}
	agent, err := s.callerAgent(ctx)
	if err != nil {
		return nil, err
	}
	params := req.GetParams()
	if n := len(params); n == 0 || n > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "batch of %d CSRs: want 1 to %d", n, MaxBatch)
	}
	list, err := s.agentEntries(ctx, agent.String())
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	entries := make(map[string]registry.Entry, len(list))
	for _, e := range list {
		entries[e.ID] = e
	}
	results := make([]*agentv1.X509SVIDResult, len(params))
	events := make([]audit.Event, len(params))
	leaves := make([]*x509.Certificate, len(params))
	parallel(len(params), func(i int) {
		p := params[i]
		res := &agentv1.X509SVIDResult{EntryId: p.GetEntryId()}
		results[i] = res
		chain, id, err := s.signEntry(entries, agent, p)
		if err != nil {
			res.Error = status.Convert(err).Message()
			events[i] = audit.Event{Type: audit.X509SVIDRefused, Actor: agent.String(), Details: map[string]string{"entry_id": p.GetEntryId(), "reason": res.Error}}
			return
		}
		res.Svid = svidProto(id, chain)
		leaves[i] = chain[0]
		events[i] = audit.Event{Type: audit.X509SVIDIssued, Actor: agent.String(), Subject: id.String(), Details: map[string]string{
			"entry_id": p.GetEntryId(), "serial": chain[0].SerialNumber.Text(16), "not_after": chain[0].NotAfter.UTC().Format(time.RFC3339),
		}}
	})
	// Recorded before any SVID is handed out: no record, no SVID.
	if err := s.audit.Append(events...); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	for i, leaf := range leaves {
		if leaf != nil {
			s.issued.record(results[i].GetSvid().GetSpiffeId(), agent.String(), leaf, s.now())
		}
	}
	return &agentv1.BatchNewX509SVIDResponse{Results: results}, nil
}

// parallel runs fn(0..n-1) on up to GOMAXPROCS goroutines.
func parallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// signEntry signs one CSR if its entry is one of the caller's. Any other
// case is the same refusal, so an agent learns nothing about other nodes'
// entries.
func (s *Server) signEntry(entries map[string]registry.Entry, agent spiffeid.ID, p *agentv1.X509SVIDParams) ([]*x509.Certificate, spiffeid.ID, error) {
	e, ok := entries[p.GetEntryId()]
	if !ok {
		return nil, spiffeid.ID{}, status.Errorf(codes.PermissionDenied, "entry %q is not an entry of agent %s", p.GetEntryId(), agent)
	}
	pub, err := ca.ParseCSR(p.GetCsr())
	if err != nil {
		return nil, spiffeid.ID{}, status.Error(codes.InvalidArgument, err.Error())
	}
	// Entries stored before a rule existed are checked again: what the
	// rules refuse is never signed.
	id, err := naming.ParseWorkloadID(s.cfg.td, e.SPIFFEID)
	if err != nil {
		return nil, spiffeid.ID{}, status.Errorf(codes.FailedPrecondition, "entry %s: %v", e.ID, err)
	}
	ttl := e.X509TTL
	if ttl == 0 {
		ttl = s.cfg.DefaultX509TTL
	}
	chain, err := s.ca.SignX509SVID(pub, id, ttl)
	if err != nil {
		return nil, spiffeid.ID{}, status.Error(codes.Unavailable, err.Error())
	}
	return chain, id, nil
}

// NewJWTSVID signs a JWT-SVID for one of the caller's entries.
func (s *Server) NewJWTSVID(ctx context.Context, req *agentv1.NewJWTSVIDRequest) (*agentv1.NewJWTSVIDResponse, error) {
	if err := s.leaderOnly(); err != nil {
		return nil, err
	}
	agent, err := s.callerAgent(ctx)
	if err != nil {
		return nil, err
	}
	e, err := s.entryFor(ctx, agent, req.GetEntryId())
	if err != nil {
		return nil, err
	}
	id, err := naming.ParseWorkloadID(s.cfg.td, e.SPIFFEID)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "entry %s: %v", e.ID, err)
	}
	ttl := e.JWTTTL
	if ttl == 0 {
		ttl = s.cfg.DefaultJWTTTL
	}
	token, exp, err := s.ca.SignJWTSVID(id, req.GetAudience(), ttl)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.audit.Append(audit.Event{Type: audit.JWTSVIDIssued, Actor: agent.String(), Subject: id.String(), Details: map[string]string{
		"entry_id": e.ID, "audience": fmt.Sprint(req.GetAudience()), "expires_at": exp.UTC().Format(time.RFC3339),
	}}); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &agentv1.NewJWTSVIDResponse{Token: token, SpiffeId: id.String(), ExpiresAt: exp.Unix()}, nil
}

// Sync sends the caller's entries and the bundle, then a new snapshot each
// time either changes. Changes are pushed, never polled for. Configuration
// travels on StreamConfig: identity never waits on it.
func (s *Server) Sync(_ *agentv1.SyncRequest, stream agentv1.Agent_SyncServer) error {
	ctx := stream.Context()
	agent, err := s.callerAgent(ctx)
	if err != nil {
		return err
	}
	s.log.Info("agent connected", "agent_id", agent.String(), "peer", peerAddr(ctx))
	defer s.log.Info("agent disconnected", "agent_id", agent.String())
	var last *agentv1.SyncResponse
	return s.followChanges(ctx, func() error {
		snap, err := s.snapshot(ctx, agent)
		if err != nil {
			return err
		}
		if last == nil || !proto.Equal(snap, last) {
			if err := stream.Send(snap); err != nil {
				return err
			}
			last = snap
		}
		return nil
	})
}

// followChanges calls send at once, then again at each change the
// broadcaster signals, until ctx is done. Each change checks the caller
// again first: an evicted agent, or one whose certificate has expired,
// loses the stream.
func (s *Server) followChanges(ctx context.Context, send func() error) error {
	for first := true; ; first = false {
		changed := s.changes.Changed()
		if !first {
			if _, err := s.callerAgent(ctx); err != nil {
				return err
			}
		}
		if err := send(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func (s *Server) snapshot(ctx context.Context, agent spiffeid.ID) (*agentv1.SyncResponse, error) {
	entries, err := s.agentEntries(ctx, agent.String())
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &agentv1.SyncResponse{Bundle: s.bundleProto()}
	for _, e := range entries {
		pe := &agentv1.Entry{Id: e.ID, SpiffeId: e.SPIFFEID, ParentId: e.ParentID, X509SvidTtl: int64(e.X509TTL / time.Second), JwtSvidTtl: int64(e.JWTTTL / time.Second), Revision: e.Revision}
		for _, sel := range e.Selectors {
			pe.Selectors = append(pe.Selectors, &agentv1.Selector{Type: sel.Type, Value: sel.Value})
		}
		out.Entries = append(out.Entries, pe)
		// The store's revision is global; an agent's is its newest entry's,
		// so other nodes' changes do not wake it.
		out.Revision = max(out.Revision, e.Revision)
	}
	return out, nil
}

// StreamConfig sends the configuration and endpoints as deltas (see
// package configdelta): the whole state first, in messages of at most
// configdelta.MaxMessageBytes plus one resource, then what changed at each
// change. This is Envoy's incremental xDS in shape, on a stream of its own
// as SPIRE keeps entry sync to itself: a large configuration costs more
// messages, never a message that cannot be sent, and never delays Sync.
func (s *Server) StreamConfig(_ *agentv1.StreamConfigRequest, stream agentv1.Agent_StreamConfigServer) error {
	ctx := stream.Context()
	if _, err := s.callerAgent(ctx); err != nil {
		return err
	}
	var last *configdelta.Snapshot
	return s.followChanges(ctx, func() error {
		snap, err := s.configSnapshot(ctx)
		if err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		if !configdelta.Same(last, snap) {
			for _, d := range configdelta.Diff(last, snap, configdelta.MaxMessageBytes) {
				if err := stream.Send(d); err != nil {
					return err
				}
			}
			last = snap
		}
		return nil
	})
}

func (s *Server) bundleProto() *agentv1.Bundle {
	b := s.ca.Bundle()
	out := &agentv1.Bundle{TrustDomain: b.TrustDomain().Name(), RefreshHint: int64(ca.RefreshHint / time.Second)}
	if seq, ok := b.SequenceNumber(); ok {
		out.Sequence = int64(seq)
	}
	for _, c := range b.X509Authorities() {
		out.X509Authorities = append(out.X509Authorities, c.Raw)
	}
	jwks, err := b.JWTBundle().Marshal()
	if err == nil {
		out.Jwks = jwks
	}
	return out
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "unknown"
}

// agentsSeen keeps when each agent last made an authenticated call. It is
// held in memory: a restarted server has not seen anyone yet.
type agentsSeen struct{ m sync.Map }

func (a *agentsSeen) mark(id string, at time.Time) { a.m.Store(id, at) }

func (a *agentsSeen) get(id string) *time.Time {
	v, ok := a.m.Load(id)
	if !ok {
		return nil
	}
	t := v.(time.Time)
	return &t
}
