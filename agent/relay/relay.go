// Package relay is the agent's side of the sidecars' Discovery API: it
// registers each sidecar's endpoint under the identity the agent attested
// for it, relays the configuration and endpoints the server streams to
// every sidecar on the node as deltas of bounded size (package
// configdelta, the same scheme the server uses towards the agent, so a
// configuration larger than one gRPC message still reaches sidecars), and
// reports the node's sidecars (with the
// config version each runs) back to the server. It also merges the golden
// metrics the sidecars send on the same stream and reports the node's
// totals to the server once per interval (stats.go).
package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/agent/cache"
	"github.com/sigil-mesh/sigil/agent/unixattest"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/api/configdelta"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/internal/backoff"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Identities says which identities a caller's selectors grant.
type Identities interface {
	Match(sels selector.Set) ([]cache.Identity, bool)
}

// Attestor turns a caller's credentials into selectors; it may block
// (the Kubernetes attestor waits for its pod informer) until ctx ends.
type Attestor interface {
	Attest(ctx context.Context, info unixattest.AuthInfo) []selector.Selector
}

// Relay serves proxyv1.Discovery.
type Relay struct {
	proxyv1.UnimplementedDiscoveryServer
	ids      Identities
	attestor Attestor
	log      *slog.Logger

	mu      sync.Mutex
	cfg     *configdelta.Snapshot
	changed chan struct{}
	proxies map[string]*agentv1.Proxy
	dirty   chan struct{}
	// reachable is poked when the server answers on another stream: a
	// report waiting out its backoff is retried at once.
	reachable chan struct{}
	// taps are the node's `sigil tap` sessions (tap.go).
	taps *taps
	// stats merges the golden metrics the sidecars send (stats.go).
	stats nodeStats
	// exportAudit passes the sidecars' audit batches on (audit.go).
	exportAudit AuditExporter
	// writers binds each audit chain (writer) to the registered sidecar
	// that sends it, under mu (audit.go).
	writers map[string]string
}

var _ proxyv1.DiscoveryServer = (*Relay)(nil)

// New returns a relay with its hooks set by opts.
func New(ids Identities, attestor Attestor, log *slog.Logger, opts ...Option) *Relay {
	r := &Relay{ids: ids, attestor: attestor, log: log, changed: make(chan struct{}), proxies: map[string]*agentv1.Proxy{}, writers: map[string]string{}, dirty: make(chan struct{}, 1), reachable: make(chan struct{}, 1), taps: newTaps(time.Now)}
	for _, o := range opts {
		o(r)
	}
	return r
}

// SetConfig takes a complete configuration from the server and wakes
// every sidecar stream if it differs. c is not changed afterwards.
func (r *Relay) SetConfig(c *configdelta.Snapshot) {
	if c == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if configdelta.Same(r.cfg, c) {
		return
	}
	r.cfg = c
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Relay) current() (*configdelta.Snapshot, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg, r.changed
}

func (r *Relay) markDirty() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

// Proxies lists the node's sidecars.
func (r *Relay) Proxies() []*agentv1.Proxy {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*agentv1.Proxy, 0, len(r.proxies))
	for _, p := range r.proxies {
		out = append(out, proto.Clone(p).(*agentv1.Proxy))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}

// Stream implements proxyv1.DiscoveryServer.
func (r *Relay) Stream(stream proxyv1.Discovery_StreamServer) error {
	ctx := stream.Context()
	info, err := unixattest.FromContext(ctx)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	ids, _ := r.ids.Match(selector.NewSet(r.attestor.Attest(ctx, info)...))
	if len(ids) == 0 {
		return status.Error(codes.PermissionDenied, "no identity issued to this sidecar; it cannot register an endpoint")
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	p, err := registration(ids[0].ID, first.GetRegister())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	r.mu.Lock()
	r.proxies[p.Id] = p
	r.mu.Unlock()
	r.markDirty()
	r.log.Info("sidecar registered", "proxy", p.Id, "service", p.Service, "namespace", p.Namespace, "address", p.Address, "spiffe_id", p.SpiffeId, "pid", info.PID)
	defer func() {
		r.mu.Lock()
		delete(r.proxies, p.Id)
		r.releaseWritersLocked(p.Id)
		r.mu.Unlock()
		r.markDirty()
		r.log.Info("sidecar deregistered", "proxy", p.Id, "service", p.Service, "address", p.Address)
	}()

	tapControls := r.taps.join(p)
	defer r.taps.leave(p)
	recvErr := make(chan error, 1)
	// A sidecar has one audit batch in flight at a time (it waits for the
	// ack); one more is queued, beyond that the stream's reader waits.
	audits := make(chan *proxyv1.AuditBatch, 1)
	auditAcks := make(chan *proxyv1.AuditAck, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case b := <-audits:
				a := r.forwardAudit(ctx, p, b)
				select {
				case auditAcks <- a:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if up := msg.GetTap(); up != nil {
				r.taps.fromSidecar(p, up)
			}
			if ack := msg.GetAck(); ack != nil {
				r.mu.Lock()
				p.ConfigVersion = ack.GetConfigVersion()
				r.mu.Unlock()
				r.markDirty()
			}
			if st := msg.GetStats(); st != nil {
				r.addStats(p, st)
			}
			if b := msg.GetAudit(); b != nil {
				select {
				case audits <- b:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	var sent *configdelta.Snapshot
	for {
		cfg, changed := r.current()
		if cfg != nil && cfg != sent {
			for _, d := range configdelta.Diff(sent, cfg, configdelta.MaxMessageBytes) {
				if err := stream.Send(&proxyv1.DiscoveryResponse{Delta: d}); err != nil {
					return err
				}
			}
			sent = cfg
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-changed:
		case c := <-tapControls:
			if err := stream.Send(&proxyv1.DiscoveryResponse{Tap: c}); err != nil {
				return err
			}
		case a := <-auditAcks:
			if err := stream.Send(&proxyv1.DiscoveryResponse{AuditAck: a}); err != nil {
				return err
			}
		}
	}
}

// registration is the sidecar a checked Register describes, attested as
// id. Its namespace is the identity's; a sidecar may name one only when
// its ID has none (naming.WorkloadNamespace).
func registration(id spiffeid.ID, reg *proxyv1.Register) (*agentv1.Proxy, error) {
	if err := checkRegister(reg); err != nil {
		return nil, err
	}
	ns, err := naming.WorkloadNamespace(id, reg.GetNamespace())
	if err != nil {
		return nil, fmt.Errorf("relay: register: %w", err)
	}
	return &agentv1.Proxy{Id: newID(), SpiffeId: id.String(), Service: reg.GetService(), Address: reg.GetAddress(), Labels: reg.GetLabels(), Namespace: ns}, nil
}

func checkRegister(reg *proxyv1.Register) error {
	if reg == nil {
		return errors.New("relay: the first message must be register")
	}
	if !naming.ValidServiceName(reg.GetService()) {
		return fmt.Errorf("relay: register: service %q: want a DNS label (a-z, 0-9, inner '-', at most 63)", reg.GetService())
	}
	if len(reg.GetLabels()) > 64 {
		return fmt.Errorf("relay: register: %d labels, at most 64", len(reg.GetLabels()))
	}
	for k, v := range reg.GetLabels() {
		if err := naming.ValidateLabel(k, v); err != nil {
			return fmt.Errorf("relay: register: %w", err)
		}
	}
	ep, err := naming.ParseEndpoint(reg.GetAddress())
	if err != nil {
		return fmt.Errorf("relay: register: %w", err)
	}
	if !ep.Addr().IsValid() {
		return fmt.Errorf("relay: register: address %q: want IP:PORT", reg.GetAddress())
	}
	return nil
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ServerReachable says the server has just answered on another stream (the
// agent's Sync stream): a report waiting out its backoff after a failure
// is sent at once, so the server learns the node's sidecars as soon as it
// is back, before it expires their endpoints.
func (r *Relay) ServerReachable() {
	select {
	case r.reachable <- struct{}{}:
	default:
	}
}

// Report runs until ctx is done, sending the node's sidecars to the server
// when they change and every interval as a heartbeat. A failed report is
// retried on the backoff schedule (internal/backoff), apart from the
// heartbeat, or at once when ServerReachable says the server is back.
func (r *Relay) Report(ctx context.Context, interval time.Duration, send func(context.Context, []*agentv1.Proxy) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var b backoff.Backoff
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.dirty:
		case <-t.C:
		}
		select {
		case <-r.reachable: // only news from now on cuts a wait
		default:
		}
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := send(callCtx, r.Proxies())
		cancel()
		if err == nil {
			b.Reset()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		wait := b.Next()
		r.log.Warn("reporting sidecars failed; retrying", "error", err, "retry_in", wait.String())
		r.markDirty()
		if !backoff.Sleep(ctx, wait, r.reachable) {
			return
		}
	}
}
