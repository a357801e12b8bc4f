// Package agent is sigil-agent, one per node. It attests the node to the
// server with a join token, keeps its own SVID fresh, follows the server's
// stream of this node's registration entries and the trust bundle, has each
// entry's SVID signed (keys made here, never sent), and serves the SPIFFE
// Workload API on a Unix socket. With the server away it keeps serving what
// it holds and keeps retrying.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-mesh/sigil/agent/cache"
	"github.com/sigil-mesh/sigil/agent/relay"
	"github.com/sigil-mesh/sigil/agent/unixattest"
	"github.com/sigil-mesh/sigil/agent/workloadapi"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
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
	JoinToken   string
	DataDir     string
	Socket      string
}

// reportEvery is the heartbeat of the node's sidecar report; the server
// expires a node's endpoints after a few missed beats.
const reportEvery = 5 * time.Second

// DefaultSocket is where the Workload API listens unless told otherwise.
const DefaultSocket = "/run/sigil/agent.sock"

// Validate checks the config, naming each bad flag.
func (c Config) Validate() error {
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
	if c.TrustDomain != "" {
		if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
			errs = append(errs, fmt.Errorf("--trust-domain %q: %w", c.TrustDomain, err))
		}
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
	a := &agent{cfg: cfg, log: log}
	if err := a.loadTrust(); err != nil {
		return err
	}
	a.client = &client{addr: cfg.ServerAddr, td: a.td, svid: &a.svid, bundles: a}
	defer a.client.close()
	if err := a.ensureSVID(ctx); err != nil {
		return err
	}
	a.cache = cache.New(a.client, a.bundle.Load(), log, nil)

	lis, err := listenWorkloadAPI(cfg.Socket)
	if err != nil {
		return err
	}
	attestor := &unixattest.Attestor{}
	a.relay = relay.New(a.cache, attestor, log)
	srv := workloadapi.NewServer(workloadapi.New(a.cache, attestor, log))
	proxyv1.RegisterDiscoveryServer(srv, a.relay)
	log.Info("sigil-agent running", "agent_id", a.svid.Load().ID.String(), "server", cfg.ServerAddr, "socket", cfg.Socket)

	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveErr := make(chan error, 1)
	wg.Add(5)
	go func() { defer wg.Done(); a.relay.Report(runCtx, reportEvery, a.client.ReportProxies) }()
	go func() { defer wg.Done(); serveErr <- srv.Serve(listener.Retrying(lis, "workload_api", log)) }()
	go func() { defer wg.Done(); a.cache.Run(runCtx) }()
	go func() { defer wg.Done(); a.syncLoop(runCtx) }()
	go func() { defer wg.Done(); a.renewLoop(runCtx) }()
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
	roots, err := readTrustBundle(a.cfg.TrustBundle)
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
	b, err := loadBundle(a.cfg.DataDir, a.td)
	if err != nil {
		return err
	}
	if b == nil {
		b = spiffebundle.FromX509Authorities(a.td, roots)
	}
	a.bundle.Store(b)
	return nil
}

// ensureSVID loads the saved agent SVID, or attests with the join token
// when there is none or it has expired.
func (a *agent) ensureSVID(ctx context.Context) error {
	svid, err := loadSVID(a.cfg.DataDir)
	if err != nil {
		return err
	}
	if svid != nil && time.Now().Before(svid.Certificates[0].NotAfter) && svid.ID.MemberOf(a.td) {
		a.svid.Store(svid)
		a.log.Info("resuming with saved agent svid", "agent_id", svid.ID.String(), "expires", svid.Certificates[0].NotAfter)
		return nil
	}
	if a.cfg.JoinToken == "" {
		return errors.New("agent: no valid saved agent SVID in --data-dir; --join-token is required to attest")
	}
	attestCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	svid, bundle, err := a.client.attest(attestCtx, a.cfg.JoinToken)
	if err != nil {
		return err
	}
	a.svid.Store(svid)
	if err := saveSVID(a.cfg.DataDir, svid); err != nil {
		return err
	}
	if err := a.applyBundle(bundle); err != nil {
		return err
	}
	a.log.Info("node attested", "agent_id", svid.ID.String(), "expires", svid.Certificates[0].NotAfter)
	return nil
}

// applyBundle takes a bundle from the server, keeps it and saves it.
func (a *agent) applyBundle(p *agentv1.Bundle) error {
	if p == nil || p.GetTrustDomain() != a.td.Name() {
		return fmt.Errorf("agent: server sent a bundle for %q, want %s", p.GetTrustDomain(), a.td)
	}
	jwtKeys, err := jwtBundle(a.td, p.GetJwks())
	if err != nil {
		return fmt.Errorf("agent: bundle jwks: %w", err)
	}
	b := spiffebundle.New(a.td)
	b.SetJWTAuthorities(jwtKeys)
	roots, err := parseDERs(p.GetX509Authorities())
	if err != nil {
		return fmt.Errorf("agent: bundle: %w", err)
	}
	if len(roots) == 0 {
		return errors.New("agent: server sent a bundle without roots")
	}
	b.SetX509Authorities(roots)
	b.SetSequenceNumber(uint64(p.GetSequence()))
	b.SetRefreshHint(time.Duration(p.GetRefreshHint()) * time.Second)
	if old := a.bundle.Load(); old != nil && old.Equal(b) {
		return nil
	}
	a.bundle.Store(b)
	if a.cache != nil {
		a.cache.SetBundle(b)
	}
	return saveBundle(a.cfg.DataDir, b)
}

// syncLoop follows the server's Sync stream, reconnecting with jittered
// exponential backoff while the server is away.
func (a *agent) syncLoop(ctx context.Context) {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		got, err := a.syncOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if got {
			backoff = 500 * time.Millisecond
		}
		if status.Code(err) == codes.PermissionDenied {
			// The server no longer knows this agent (evicted): its workloads
			// keep nothing it holds. Fail closed; only a new attestation
			// brings identities back.
			if cerr := a.cache.SetEntries(nil); cerr != nil {
				a.log.Error("dropping identities", "error", cerr)
			}
			a.log.Error("the server refused this agent (evicted?); serving no identities until it attests again with a new join token", "error", err)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		a.log.Warn("sync stream ended; reconnecting", "error", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// syncOnce runs one Sync stream; it reports whether it received anything.
func (a *agent) syncOnce(ctx context.Context) (bool, error) {
	api, err := a.client.api()
	if err != nil {
		return false, err
	}
	stream, err := api.Sync(ctx, &agentv1.SyncRequest{})
	if err != nil {
		return false, err
	}
	got := false
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return got, errors.New("server closed the stream")
		}
		if err != nil {
			return got, err
		}
		got = true
		if err := a.applyBundle(msg.GetBundle()); err != nil {
			a.log.Error("bundle from server refused", "error", err)
			continue
		}
		if err := a.cache.SetEntries(msg.GetEntries()); err != nil {
			a.log.Error("entries from server refused", "error", err)
			continue
		}
		a.relay.SetConfig(msg.GetConfig())
		a.log.Debug("synced", "entries", len(msg.GetEntries()), "revision", msg.GetRevision())
	}
}

// renewLoop renews the agent's own SVID at half-life.
func (a *agent) renewLoop(ctx context.Context) {
	backoff := time.Second
	for {
		leaf := a.svid.Load().Certificates[0]
		wait := time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2))
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
		callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		svid, err := a.client.renew(callCtx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("agent svid renewal failed; retrying", "error", err, "expires", leaf.NotAfter)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = time.Second
		a.svid.Store(svid)
		if err := saveSVID(a.cfg.DataDir, svid); err != nil {
			a.log.Error("agent svid not saved", "error", err)
		}
		// New handshakes must present the new certificate.
		a.client.reset()
		a.log.Info("agent svid renewed", "expires", svid.Certificates[0].NotAfter)
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
