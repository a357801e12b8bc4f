package server

// High availability on Kubernetes: several replicas share one CA, kept in
// the sigil-ca Secret (package k8s/secretkeys), and elect one leader with
// a Lease (package k8s/leader). Only the leader signs agent and workload
// SVIDs and rotates the CA; a follower answers those calls with
// agentv1.NotLeader naming the leader's address, and the agent retries
// there (a follower does not forward: the leader must see the agent's own
// mutual-TLS identity, which a forwarded call would replace with the
// follower's). Followers serve the reads (Sync, StreamConfig, the bundle)
// and reload the CA whenever the Secret changes. docs/kubernetes.md, "High
// availability", says why and what stays per replica.

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/k8s/evictions"
	"github.com/sigil-mesh/sigil/k8s/leader"
	"github.com/sigil-mesh/sigil/k8s/secretkeys"
	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/klog/v2"
)

// LeaderConfig is how replicas elect the one that signs (flags in
// kube-controller-manager's terms).
type LeaderConfig struct {
	// PodName is this replica's pod (--k8s-pod-name; default $HOSTNAME,
	// which Kubernetes sets to the pod's name).
	PodName string
	// AdvertiseAddress is the HOST:PORT other replicas send agents to
	// when this one leads (--k8s-advertise-address; default the agent
	// API's listening address, with $POD_IP for an unspecified host).
	AdvertiseAddress string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's
	// leader election timing (--leader-elect-lease-duration,
	// --leader-elect-renew-deadline, --leader-elect-retry-period;
	// defaults 15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// checkHA checks the HA flags and defaults them; it adds nothing without
// --kubernetes, where giving one is an error.
func (c *Config) checkHA() []error {
	l := &c.Kubernetes.Leader
	if !c.Kubernetes.Enabled {
		if *l != (LeaderConfig{}) {
			return []error{errors.New("server: --k8s-pod-name, --k8s-advertise-address and --leader-elect-* need --kubernetes")}
		}
		return nil
	}
	var errs []error
	if c.KMS != "" && c.KMS != ca.DefaultKMS {
		errs = append(errs, fmt.Errorf("--kms %s: with --kubernetes the CA's keys live in the %s Secret; no other key manager is used", c.KMS, secretkeys.DefaultName))
	}
	if l.PodName == "" {
		l.PodName = os.Getenv("HOSTNAME")
	}
	if l.PodName == "" {
		l.PodName, _ = os.Hostname()
	}
	if !naming.ValidName(l.PodName) {
		errs = append(errs, fmt.Errorf("--k8s-pod-name %s: not a pod name", naming.Quote(l.PodName)))
	}
	if l.AdvertiseAddress != "" {
		if host, port, err := net.SplitHostPort(l.AdvertiseAddress); err != nil || host == "" || port == "" || port == "0" {
			errs = append(errs, fmt.Errorf("--k8s-advertise-address %s: want HOST:PORT", naming.Quote(l.AdvertiseAddress)))
		}
	}
	if l.LeaseDuration == 0 {
		l.LeaseDuration = leader.DefaultLeaseDuration
	}
	if l.RenewDeadline == 0 {
		l.RenewDeadline = leader.DefaultRenewDeadline
	}
	if l.RetryPeriod == 0 {
		l.RetryPeriod = leader.DefaultRetryPeriod
	}
	if !(l.LeaseDuration > l.RenewDeadline && l.RenewDeadline > l.RetryPeriod && l.RetryPeriod > 0) {
		errs = append(errs, fmt.Errorf("--leader-elect-lease-duration %s, --leader-elect-renew-deadline %s, --leader-elect-retry-period %s: each must be longer than the next, and all positive",
			l.LeaseDuration, l.RenewDeadline, l.RetryPeriod))
	}
	return errs
}

// haState is the server's part in HA; nil on a plain host, where the one
// server leads and keeps the CA in its registry.
type haState struct {
	secret  *secretkeys.Store
	elector atomic.Pointer[leader.Elector] // set once the part starts
	addr    atomic.Pointer[string]         // agent API address to advertise
	// evictions is the evictions ConfigMap every replica follows
	// (k8s_evictions.go); evictMu serializes this replica's own evictions
	// with those it applies from the ConfigMap, so an agent's record is
	// deleted, and audited, once.
	evictions *evictions.Store
	evictMu   sync.Mutex
}

// openHA connects to the API server with --kubernetes and returns the
// Secret store the CA is to use; nil, nil without --kubernetes.
func openHA(c *checked, log *slog.Logger) (*haState, *kube.Clients, error) {
	if !c.Kubernetes.Enabled {
		return nil, nil, nil
	}
	// client-go's own log lines (leader election, reflectors) go through
	// the server's JSON log.
	klog.SetSlogLogger(log.With("part", "client-go"))
	clients, err := kube.Connect(kube.Options{Kubeconfig: c.Kubernetes.Kubeconfig, UserAgent: "sigil-server"})
	if err != nil {
		return nil, nil, fmt.Errorf("server: %w", err)
	}
	h := &haState{
		secret:    secretkeys.New(clients.Core, c.Kubernetes.Namespace, secretkeys.DefaultName),
		evictions: evictions.New(clients.Core, c.Kubernetes.Namespace, evictions.DefaultName),
	}
	return h, clients, nil
}

// caStores returns the CA's state and key stores: the Secret on
// Kubernetes, else the registry and softkms (nil).
func (h *haState) caStores(store *registry.Store) (ca.StateStore, ca.KeyStore) {
	if h == nil {
		return store, nil
	}
	return h.secret, h.secret
}

// listening records the agent API's listening address.
func (h *haState) listening(addr net.Addr) {
	if h != nil {
		a := addr.String()
		h.addr.Store(&a)
	}
}

// caStatePeek returns the CA's saved state for the audit reconciliation,
// from wherever the CA keeps it.
func (s *Server) caStatePeek(ctx context.Context) ([]byte, error) {
	if s.ha != nil {
		return s.ha.secret.Peek(ctx)
	}
	return s.store.LoadCAState(ctx)
}

// isLeader reports whether this replica signs: always on a plain host; on
// Kubernetes while it holds the Lease. Status writes and other once-per-
// cluster work ask it too.
func (s *Server) isLeader() bool {
	if s.ha == nil {
		return true
	}
	e := s.ha.elector.Load()
	return e != nil && e.IsLeader()
}

// leaderOnly lets a signing call through on the leader and answers it on
// a follower with the leader's address (agentv1.NotLeader).
func (s *Server) leaderOnly() error {
	if s.isLeader() {
		return nil
	}
	addr := ""
	if e := s.ha.elector.Load(); e != nil {
		addr, _ = leader.Address(e.Leader())
	}
	return agentv1.NotLeader(addr)
}

// advertised is this replica's agent API address as other replicas send
// agents to it.
func (s *Server) advertised() (string, error) {
	l := s.cfg.Kubernetes.Leader
	if l.AdvertiseAddress != "" {
		return l.AdvertiseAddress, nil
	}
	p := s.ha.addr.Load()
	if p == nil {
		return "", errors.New("server: the agent API is not listening yet")
	}
	host, port, err := net.SplitHostPort(*p)
	if err != nil {
		return "", err
	}
	if _, err := naming.ParseEndpoint(*p); err != nil {
		// Listening on every address (0.0.0.0, ::, or no host): no
		// address another replica or an agent can dial.
		host = os.Getenv("POD_IP")
		if host == "" {
			return "", fmt.Errorf("server: --bind %s listens on every address and $POD_IP is unset: give --k8s-advertise-address", *p)
		}
	}
	return net.JoinHostPort(host, port), nil
}

// startLeader is the "leader" Kubernetes part: it follows the CA Secret
// (a change another replica made reloads the CA and pushes the bundle to
// agents) and campaigns for the Lease.
func (s *Server) startLeader(ctx context.Context, wg *sync.WaitGroup) error {
	addr, err := s.advertised()
	if err != nil {
		return err
	}
	l := s.cfg.Kubernetes.Leader
	e, err := leader.New(leader.Config{
		Leases: s.kube.Core.CoordinationV1(), Namespace: s.cfg.Kubernetes.Namespace,
		Identity:      leader.Identity(l.PodName, addr),
		LeaseDuration: l.LeaseDuration, RenewDeadline: l.RenewDeadline, RetryPeriod: l.RetryPeriod,
		Logger: s.log.With("part", "leader"),
	})
	if err != nil {
		return err
	}
	if err := s.ha.secret.Watch(ctx, wg, func() { s.reloadCA(ctx) }); err != nil {
		return err
	}
	s.ha.elector.Store(e)
	wg.Add(1)
	go func() { defer wg.Done(); e.Run(ctx) }()
	return nil
}

// reloadCA takes the CA another replica saved.
func (s *Server) reloadCA(ctx context.Context) {
	if err := s.ca.Reload(ctx); err != nil {
		s.log.Error("ca: reloading from the Secret failed; the next change retries", "error", err)
		return
	}
	s.changes.Notify()
}

// rotateCA is the CA's periodic rotation; on Kubernetes only the leader
// rotates, and one that finds another replica saved first reloads.
func (s *Server) rotateCA(ctx context.Context) {
	if !s.isLeader() {
		return
	}
	changed, err := s.ca.Rotate(ctx)
	s.metrics.rotation(changed, err)
	if errors.Is(err, ca.ErrStateConflict) {
		s.log.Warn("ca rotation: another replica saved the CA first; reloading", "error", err)
		s.reloadCA(ctx)
		return
	}
	if err != nil {
		s.log.Error("ca rotation failed; will retry", "error", err)
	}
	if changed {
		s.changes.Notify()
	}
}

// leaderGauge is sigil_server_leader.
func (s *Server) leaderGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sigil_server_leader", Help: "1 while this replica is the leader that signs (always on a plain host), else 0."},
		func() float64 {
			if s.isLeader() {
				return 1
			}
			return 0
		})
}

// auditAgentAdopted records a replica taking an agent attested elsewhere.
const auditAgentAdopted = "agent.adopted"

// adoptAgent records, on a replica of a Kubernetes server, an agent that
// another replica attested: its SVID, just verified against the CA all
// replicas share, is the proof (callerAgent has refused an SVID from
// before an eviction of the agent, k8s_evictions.go). Without
// --kubernetes an unknown agent is refused as before. Returns
// registry.ErrNotFound when it does not adopt.
func (s *Server) adoptAgent(ctx context.Context, id spiffeid.ID, leaf *x509.Certificate) error {
	if s.ha == nil {
		return registry.ErrNotFound
	}
	// An agent ID is /sigil/agent/<attestor>/<node> or
	// /sigil/agent/k8s_psat/<cluster>/<node> (callerAgent checked it).
	attestor, node, ok := naming.AgentNode(id)
	if !ok {
		return registry.ErrNotFound
	}
	a := registry.Agent{SPIFFEID: id.String(), Attestor: attestor, Node: node, Serial: leaf.SerialNumber.Text(16), ExpiresAt: leaf.NotAfter, AttestedAt: leaf.NotBefore}
	ev := audit.Event{Type: auditAgentAdopted, Actor: id.String(), Subject: id.String(), Details: map[string]string{"serial": a.Serial, "node": node, "not_after": leaf.NotAfter.UTC().Format(time.RFC3339)}}
	if err := s.audited(ctx, []audit.Event{ev}, func() error { return s.store.SaveAgent(ctx, a, s.now()) }); err != nil {
		return err
	}
	s.log.Info("agent attested by another replica adopted", "agent_id", id.String(), "node", node)
	return nil
}
