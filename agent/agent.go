// Package agent is sigil-agent, one per node. It attests the node to the
// server with a join token, keeps its own SVID fresh (and, should it expire
// or be refused, re-attests with a new token from --join-token-file without
// a restart), follows the server's
// stream of this node's registration entries and the trust bundle, has each
// entry's SVID signed (keys made here, never sent), and serves the SPIFFE
// Workload API on a Unix socket. With the server away it keeps serving what
// it holds and keeps retrying.
//
// This package is the daemon's wiring: when to renew or re-attest and what
// the node serves meanwhile (renew.go), the streams from the server, the
// health endpoint. The agent's own SVID (attestation, renewal, the files
// it is kept in, the checks every SVID received passes) is agent/svid.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-mesh/sigil/agent/cache"
	"github.com/sigil-mesh/sigil/agent/relay"
	"github.com/sigil-mesh/sigil/agent/svid"
	"github.com/sigil-mesh/sigil/agent/workloadapi"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/internal/backoff"
	"github.com/sigil-mesh/sigil/listener"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Config is what `sigil-agent run` takes.
type Config struct {
	ServerAddr  string
	TrustBundle string
	TrustDomain string
	// JoinToken is a token given on the command line, where every local
	// user can read it; JoinTokenFile is the safe way (a 0600 file, or "-"
	// for stdin), and the one the agent re-reads to re-attest.
	JoinToken     string
	JoinTokenFile string
	DataDir       string
	Socket        string
	// Admin is HOST:PORT for /metrics, /ready and /live; empty: none.
	Admin string
	// StatsInterval is how often the agent reports its node's golden
	// metrics to the server (--stats-interval): 1s to 1m; 0 is
	// DefaultStatsInterval.
	StatsInterval time.Duration
	// Kubernetes turns on and configures node and workload attestation on
	// Kubernetes (k8s.go).
	Kubernetes KubeConfig
}

// DefaultStatsInterval is how often the agent reports its node's golden
// metrics: the server's window has 10 s resolution.
const DefaultStatsInterval = 10 * time.Second

// reportEvery is the heartbeat of the node's sidecar report; the server
// expires a node's endpoints after a few missed beats.
const reportEvery = 5 * time.Second

// DefaultSocket is where the Workload API listens unless told otherwise.
const DefaultSocket = "/run/sigil/agent.sock"

// Validate checks the config, naming each bad flag.
func (c *Config) Validate() error {
	var errs []error
	if c.ServerAddr == "" {
		errs = append(errs, errors.New("--server is required"))
	} else if _, _, err := net.SplitHostPort(c.ServerAddr); err != nil {
		errs = append(errs, fmt.Errorf("--server %q: %w", c.ServerAddr, err))
	}
	if c.TrustBundle == "" {
		errs = append(errs, errors.New("--trust-bundle is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	if c.Socket == "" {
		errs = append(errs, errors.New("--socket is required"))
	}
	if c.JoinToken != "" && c.JoinTokenFile != "" {
		errs = append(errs, errors.New("--join-token and --join-token-file: give one"))
	}
	if c.Admin != "" {
		if _, _, err := net.SplitHostPort(c.Admin); err != nil {
			errs = append(errs, fmt.Errorf("--admin %q: %w", c.Admin, err))
		}
	}
	if c.TrustDomain != "" {
		if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
			errs = append(errs, fmt.Errorf("--trust-domain %q: %w", c.TrustDomain, err))
		}
	}
	errs = append(errs, c.Kubernetes.check(c.JoinToken != "" || c.JoinTokenFile != "")...)
	if c.StatsInterval != 0 && (c.StatsInterval < time.Second || c.StatsInterval > time.Minute) {
		errs = append(errs, fmt.Errorf("--stats-interval %s: want 1s to 1m", c.StatsInterval))
	}
	if len(errs) > 0 {
		return fmt.Errorf("agent: invalid configuration: %w", errors.Join(errs...))
	}
	return nil
}

type agent struct {
	cfg    Config
	log    *slog.Logger
	td     spiffeid.TrustDomain
	svid   atomic.Pointer[x509svid.SVID]
	bundle atomic.Pointer[spiffebundle.Bundle]
	client *client
	cache  *cache.Cache
	relay  *relay.Relay
	tokens svid.TokenSource
	health *health
	// evicted is set when the server refuses this agent; renewWake wakes
	// renewLoop for it, and reattested wakes syncLoop after a re-attestation.
	evicted    atomic.Bool
	renewWake  chan struct{}
	reattested chan struct{}
}

// argvTokenWarning is logged when the token comes from the command line.
const argvTokenWarning = "--join-token puts the join token in this process's command line, which every local user can read (ps, /proc/PID/cmdline) and use first to attest as this node and receive its workloads' identities; use --join-token-file FILE (mode 0600) or --join-token-file - (stdin) instead"

// poke sends on a wake-up channel of capacity 1 without blocking.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// GetX509BundleForTrustDomain makes the agent an x509bundle.Source over
// the bundle it currently holds.
func (a *agent) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != a.td {
		return nil, fmt.Errorf("agent: no bundle for trust domain %s", td)
	}
	return a.bundle.Load().X509Bundle(), nil
}

// Run runs the agent until ctx is done.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("agent: data dir: %w", err)
	}
	if cfg.JoinToken != "" {
		log.Warn(argvTokenWarning)
	}
	toks, err := tokenSource(cfg)
	if err != nil {
		return err
	}
	a := &agent{cfg: cfg, log: log, tokens: toks, renewWake: make(chan struct{}, 1), reattested: make(chan struct{}, 1)}
	a.health = newHealth(log, time.Now, a.svidNotAfter, cfg.Kubernetes.Enabled)
	if err := a.loadTrust(); err != nil {
		return err
	}
	a.client = &client{addr: cfg.ServerAddr, td: a.td, svid: &a.svid, bundles: a}
	defer a.client.close()
	if err := a.ensureSVID(ctx); err != nil {
		return err
	}
	a.cache = cache.New(a.client, a.bundle.Load(), log, nil)

	adminAddr := ""
	if cfg.Admin != "" {
		adminLn, err := net.Listen("tcp", cfg.Admin)
		if err != nil {
			return fmt.Errorf("agent: --admin %s: %w", cfg.Admin, err)
		}
		adminSrv := &http.Server{Handler: a.health.handler(), ReadHeaderTimeout: 5 * time.Second}
		go adminSrv.Serve(adminLn)
		defer adminSrv.Close()
		adminAddr = adminLn.Addr().String()
	}
	podsCtx, stopPods := context.WithCancel(ctx)
	attestor, podsDone, err := a.newAttestor(podsCtx)
	defer func() {
		stopPods()
		if podsDone != nil {
			<-podsDone
		}
	}()
	if err != nil {
		return err
	}
	lis, err := listenWorkloadAPI(cfg.Socket)
	if err != nil {
		return err
	}
	a.relay = relay.New(a.cache, attestor, log, relay.WithAuditExport(a.client.ExportAudit))
	a.health.countStats(a.relay.StatsCounts)
	srv := workloadapi.NewServer(workloadapi.New(a.cache, attestor, log))
	proxyv1.RegisterDiscoveryServer(srv, a.relay)
	log.Info("sigil-agent running", "agent_id", a.svid.Load().ID.String(), "server", cfg.ServerAddr, "socket", cfg.Socket, "admin", adminAddr)

	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveErr := make(chan error, 1)
	wg.Add(7)
	go func() { defer wg.Done(); a.relay.Report(runCtx, reportEvery, a.reportProxies) }()
	go func() {
		defer wg.Done()
		every := cmp.Or(cfg.StatsInterval, DefaultStatsInterval)
		t := time.NewTicker(every)
		defer t.Stop()
		a.relay.ReportStats(runCtx, t.C, every, a.client.ReportStats)
	}()
	go func() { defer wg.Done(); serveErr <- srv.Serve(listener.Retrying(lis, "workload_api", log)) }()
	go func() { defer wg.Done(); a.cache.Run(runCtx) }()
	go func() { defer wg.Done(); a.syncLoop(runCtx) }()
	go func() { defer wg.Done(); a.configLoop(runCtx) }()
	go func() { defer wg.Done(); a.renewLoop(runCtx) }()
	wg.Add(1)
	go func() { defer wg.Done(); a.tapLoop(runCtx) }()
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("agent: workload api: %w", err)
	}
	cancel()
	srv.Stop()
	wg.Wait()
	os.Remove(cfg.Socket)
	log.Info("sigil-agent stopped")
	return err
}

// loadTrust sets the trust domain and the bundle: the one last received
// from the server if there is one, else the operator's --trust-bundle.
func (a *agent) loadTrust() error {
	roots, err := svid.ReadTrustBundle(a.cfg.TrustBundle)
	if err != nil {
		return err
	}
	if a.cfg.TrustDomain != "" {
		a.td = spiffeid.RequireTrustDomainFromString(a.cfg.TrustDomain)
	} else if len(roots[0].URIs) > 0 {
		// Sigil roots name their trust domain in a URI SAN.
		id, err := spiffeid.FromURI(roots[0].URIs[0])
		if err != nil {
			return fmt.Errorf("agent: --trust-bundle: root's URI SAN: %w", err)
		}
		a.td = id.TrustDomain()
	} else {
		return errors.New("agent: --trust-bundle's root names no trust domain; pass --trust-domain")
	}
	b, err := svid.LoadBundle(a.cfg.DataDir, a.td)
	if err != nil {
		return err
	}
	if b == nil {
		b = spiffebundle.FromX509Authorities(a.td, roots)
	}
	a.bundle.Store(b)
	return nil
}

// reportProxies sends the node's sidecars to the server; its success every
// reportEvery is the heartbeat behind sigil_agent_server_contact_age_seconds.
func (a *agent) reportProxies(ctx context.Context, proxies []*agentv1.Proxy) error {
	err := a.client.ReportProxies(ctx, proxies)
	if err == nil {
		a.health.contact()
	}
	return err
}

// svidNotAfter is when the agent SVID expires (zero before there is one).
func (a *agent) svidNotAfter() time.Time {
	if s := a.svid.Load(); s != nil {
		return s.Certificates[0].NotAfter
	}
	return time.Time{}
}

// ensureSVID loads the saved agent SVID, or attests with the join token
// when there is none or it has expired.
func (a *agent) ensureSVID(ctx context.Context) error {
	saved, err := svid.Load(a.cfg.DataDir)
	if err != nil {
		return err
	}
	if saved != nil && time.Now().Before(saved.Certificates[0].NotAfter) && saved.ID.MemberOf(a.td) && a.cfg.Kubernetes.checkOwnID(saved.ID) == nil {
		a.svid.Store(saved)
		a.log.Info("resuming with saved agent svid", "agent_id", saved.ID.String(), "not_after", saved.Certificates[0].NotAfter)
		return nil
	}
	token, err := a.tokens.Next()
	if errors.Is(err, svid.ErrNoToken) {
		return errors.New("agent: no valid saved agent SVID in --data-dir; a join token is required to attest (--join-token-file)")
	}
	if err != nil && a.cfg.Kubernetes.Enabled {
		return fmt.Errorf("agent: no valid saved agent SVID in --data-dir, and the node cannot attest: %w", err)
	}
	if err != nil {
		return err
	}
	attestCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	own, bundle, err := a.client.attest(attestCtx, token)
	if err != nil {
		return err
	}
	a.tokens.Spent(token)
	if err := a.cfg.Kubernetes.checkOwnID(own.ID); err != nil {
		return err
	}
	if err := a.adopt(own); err != nil {
		return err
	}
	if err := a.applyBundle(bundle); err != nil {
		return err
	}
	a.log.Info("node attested", "agent_id", own.ID.String(), "not_after", own.Certificates[0].NotAfter)
	return nil
}

// adopt makes own the agent's SVID: kept, saved, and presented by the
// next handshake with the server.
func (a *agent) adopt(own *x509svid.SVID) error {
	a.svid.Store(own)
	a.client.reset()
	if err := svid.Save(a.cfg.DataDir, own); err != nil {
		return err
	}
	a.health.contact()
	return nil
}

// applyBundle takes a bundle from the server, keeps it and saves it.
func (a *agent) applyBundle(p *agentv1.Bundle) error {
	b, err := svid.ParseBundle(a.td, p)
	if err != nil {
		return err
	}
	if old := a.bundle.Load(); old != nil && old.Equal(b) {
		return nil
	}
	a.bundle.Store(b)
	if a.cache != nil {
		a.cache.SetBundle(b)
	}
	return svid.SaveBundle(a.cfg.DataDir, b)
}

// syncLoop follows the server's Sync stream, reconnecting on the backoff
// schedule while the server is away, and at once after a re-attestation.
func (a *agent) syncLoop(ctx context.Context) {
	var b backoff.Backoff
	for ctx.Err() == nil {
		used := a.svid.Load()
		got, err := a.syncOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if got {
			b.Reset()
		}
		// A refusal of an SVID since replaced (a re-attestation raced this
		// stream) says nothing about the agent now.
		if status.Code(err) == codes.PermissionDenied && a.svid.Load() == used {
			// The server no longer knows this agent (evicted): its workloads
			// keep nothing it holds. Fail closed; only a new attestation
			// brings identities back.
			if cerr := a.cache.SetEntries(nil); cerr != nil {
				a.log.Error("dropping identities", "error", cerr)
			}
			a.markEvicted(err)
		}
		a.log.Warn("sync stream ended; reconnecting", "error", err)
		if !b.Wait(ctx, a.reattested) {
			return
		}
	}
}

// syncOnce runs one Sync stream; it reports whether it received anything.
func (a *agent) syncOnce(ctx context.Context) (bool, error) {
	api, err := a.client.api()
	if err != nil {
		return false, err
	}
	stream, err := api.Sync(ctx, &agentv1.SyncRequest{}, syncCallOptions...)
	if err != nil {
		return false, err
	}
	got := false
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return got, errors.New("agent: server closed the stream")
		}
		if err != nil {
			return got, err
		}
		if !got {
			a.relay.ServerReachable() // a report that failed meanwhile goes now
		}
		got = true
		a.health.contact()
		if err := a.applyBundle(msg.GetBundle()); err != nil {
			a.log.Error("bundle from server refused", "error", err)
			continue
		}
		if err := a.cache.SetEntries(msg.GetEntries()); err != nil {
			a.log.Error("entries from server refused", "error", err)
			continue
		}
		a.log.Debug("synced", "entries", len(msg.GetEntries()), "revision", msg.GetRevision())
	}
}

// listenWorkloadAPI opens the socket for every local user: attestation,
// not file permissions, decides what each caller gets.
func listenWorkloadAPI(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("agent: socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("agent: socket: %w", err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agent: socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		lis.Close()
		return nil, fmt.Errorf("agent: socket: %w", err)
	}
	return lis, nil
}
