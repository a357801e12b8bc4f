// Package server is sigil-server: it wires the registry, the audit trail and
// the CA to two APIs. The agent API (gRPC, mutual TLS, default :8081)
// attests agents with join tokens, signs their workloads' SVIDs in batches
// and streams entry and bundle changes to them. The admin API (HTTP+JSON on
// a Unix socket in the data dir, owner only) is what `sigil-server token`,
// `entry`, `agent` and `bundle` and the `sigil` CLI use, through the wire
// types and client of api/admin/v1.
//
// server.go and config.go are the daemon's wiring; agentapi*.go the agent
// API (agentapi_endpoints.go: the sidecars agents report;
// agentapi_stats.go: their golden metrics); adminapi*.go the
// admin API, one file per resource; configindex.go the parsed
// configuration both APIs read; audited.go the audit trail's
// intent-then-outcome writes; registry/ the SQLite store.
package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/k8s/discovery"
	"github.com/sigil-mesh/sigil/k8s/podidentity"
	"github.com/sigil-mesh/sigil/k8s/psat"
	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/listener"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/sigil-mesh/sigil/telemetry/window"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/informers"
)

// Server is a running sigil-server.
type Server struct {
	cfg     *checked
	log     *slog.Logger
	store   *registry.Store
	audit   *audit.Log
	ca      *ca.CA
	changes *broadcaster
	now     func() time.Time

	svid atomic.Pointer[tls.Certificate]
	seen agentsSeen // last authenticated call of each agent

	psat atomic.Pointer[psat.Attestor] // node attestation by projected token, once started (k8s_psat.go)

	issued issuedSVIDs // newest workload SVIDs handed out, for the dashboard

	config configIndex // the stored configuration, parsed; see configindex.go

	// stats is the golden-metrics window agents report into
	// (agentapi_stats.go); memory only, a restart empties it.
	stats           *window.Store
	statsFullWarned atomic.Int64 // Unix seconds of the last "window full" warning

	refusedMu   sync.Mutex
	refusedSeen map[string]bool // endpoint refusals already audited

	metrics *metrics // the server's own Prometheus series: metrics.go

	taps tapHub // sigil tap: running taps and agents' Tap streams (tap.go)

	auditOut *auditStream // the audit stream's spool and exporters (auditexport.go)

	kube *kube.Clients // the API server's clients with --kubernetes, else nil (k8s.go)
	ha   *haState      // the CA Secret and leader election with --kubernetes, else nil (k8s_leader.go)
	// pods are the pods' automatic entries once listed, else nil (k8s_pods.go).
	pods atomic.Pointer[podidentity.Index]
	// kubeLeader says whether this replica is the leader, once leader
	// election runs; nil: every replica acts as one (k8s_config.go).
	kubeLeader func() bool

	kubeServices atomic.Pointer[discovery.Watcher] // Services and EndpointSlices once synced (k8s_services.go)
	// kubeInformers is the one informer factory the Kubernetes parts
	// share (one Pod informer for discovery and automatic identity), set
	// before they start (k8s.go).
	kubeInformers informers.SharedInformerFactory

	agentv1.UnimplementedAgentServer
}

// rotateEvery is how often the CA and the server's own SVID are checked.
const rotateEvery = 5 * time.Second

// Run starts the server and blocks until ctx is done, then stops cleanly.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	c, err := cfg.Validate()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("server: data dir: %w", err)
	}
	unlock, err := lockDataDir(c.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	store, err := registry.Open(ctx, c.DataDir)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := fixTrustDomain(ctx, store, c.td.Name()); err != nil {
		return err
	}
	auditOut, err := openAuditStream(c, log)
	if err != nil {
		return err
	}
	defer auditOut.close()
	auditLog, err := audit.Open(filepath.Join(c.DataDir, "audit.log"), time.Now, audit.WithTee(auditOut.tee))
	if err != nil {
		return err
	}
	defer auditLog.Close()
	ha, kubeClients, err := openHA(c, log)
	if err != nil {
		return err
	}
	caState, caKeys := ha.caStores(store)
	authority, err := ca.New(ctx, ca.Config{
		TrustDomain: c.td, KeyDir: ca.KeyDir(c.DataDir), KMS: c.KMS, Keys: caKeys,
		RootTTL: c.RootTTL, CATTL: c.CATTL, Upstream: c.upstream,
		State: caState, Audit: auditLog, Logger: log,
	})
	if err != nil {
		return err
	}
	stats, err := window.New(window.Config{MaxKeys: c.StatsMaxKeys})
	if err != nil {
		return err
	}
	s := &Server{cfg: c, log: log, store: store, audit: auditLog, ca: authority, changes: newBroadcaster(), now: time.Now, refusedSeen: map[string]bool{}, stats: stats, auditOut: auditOut, ha: ha, kube: kubeClients}
	s.metrics = newMetrics(serverMetricsSource{s}, s.now, log)
	s.metrics.reg.MustRegister(s.leaderGauge())
	s.kubeLeader = s.isLeader // the CRDs' status is written by the leader (k8s_config.go)
	s.metrics.reg.MustRegister(auditOut.collectors()...)
	s.metrics.watchWindow(stats)
	if err := s.reconcileAudit(ctx); err != nil {
		return err
	}
	if err := s.renewServerSVID(); err != nil {
		return err
	}

	agentLis, err := net.Listen("tcp", c.Bind)
	if err != nil {
		return fmt.Errorf("server: --bind %s: %w", c.Bind, err)
	}
	ha.listening(agentLis.Addr())
	adminLis, err := listenAdmin(adminv1.AdminSocket(c.DataDir))
	if err != nil {
		agentLis.Close()
		return err
	}
	dashServer, dashLis, err := s.dashboardServer(stats, stats)
	if err != nil {
		agentLis.Close()
		adminLis.Close()
		return err
	}
	grpcServer := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.tlsConfig())),
		grpc.MaxRecvMsgSize(16<<20),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(s.metrics.unary),
		grpc.ChainStreamInterceptor(s.metrics.stream),
	)
	agentv1.RegisterAgentServer(grpcServer, s)
	adminServer := &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
	adminServer.RegisterOnShutdown(s.taps.shutdown)

	if err := s.audit.Append(audit.Event{Type: audit.ServerStarted, Actor: "server", Details: map[string]string{"trust_domain": c.td.Name(), "bind": agentLis.Addr().String()}}); err != nil {
		return err
	}
	log.Info("sigil-server running", "trust_domain", c.td.Name(), "agent_api", agentLis.Addr().String(), "admin_socket", adminv1.AdminSocket(c.DataDir),
		"dashboard", dashboardURL(dashLis, c.dashboard))

	var wg sync.WaitGroup
	errc := make(chan error, 5)
	wg.Add(3)
	if dashServer != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := dashServer.Serve(listener.Retrying(dashLis, "dashboard", log)); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	go func() { defer wg.Done(); errc <- grpcServer.Serve(listener.Retrying(agentLis, "agent_api", log)) }()
	go func() {
		defer wg.Done()
		if err := adminServer.Serve(listener.Retrying(adminLis, "admin", log)); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	loopCtx, stopLoop := context.WithCancel(ctx)
	go func() { defer wg.Done(); s.rotateLoop(loopCtx) }()
	auditOut.run(loopCtx, &wg)
	if err := s.startKube(loopCtx, &wg); err != nil {
		errc <- err
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	stopLoop()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = adminServer.Shutdown(shutdownCtx)
	if dashServer != nil {
		_ = dashServer.Shutdown(shutdownCtx)
	}
	stopped := make(chan struct{})
	go func() { grpcServer.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		// Agents hold Sync streams open; cut them rather than wait.
		grpcServer.Stop()
	}
	wg.Wait()
	_ = s.audit.Append(audit.Event{Type: audit.ServerStopped, Actor: "server"})
	log.Info("sigil-server stopped")
	return runErr
}

func fixTrustDomain(ctx context.Context, store *registry.Store, td string) error {
	have, err := store.TrustDomain(ctx)
	if err != nil {
		return err
	}
	switch have {
	case "":
		return store.SetTrustDomain(ctx, td)
	case td:
		return nil
	default:
		return fmt.Errorf("server: --trust-domain %s: this data dir belongs to trust domain %s, which is fixed at first start", td, have)
	}
}

// lockDataDir keeps a second server off the same data dir.
func lockDataDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("server: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("server: data dir %s is in use by another sigil-server", dir)
	}
	return func() { f.Close() }, nil
}

// listenAdmin opens the admin socket, owner only: it can mint join tokens.
func listenAdmin(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("server: admin socket: %w", err)
	}
	old := syscall.Umask(0o177)
	lis, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("server: admin socket %s: %w", path, err)
	}
	return lis, nil
}

func (s *Server) rotateLoop(ctx context.Context) {
	t := time.NewTicker(rotateEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.rotateCA(ctx)
		if n, err := s.store.ExpireProxies(ctx, s.now().Add(-proxyExpiry)); err != nil {
			s.log.Error("expiring proxies failed", "error", err)
		} else if n > 0 {
			s.log.Info("endpoints expired: their agents stopped reporting", "proxies", n)
			s.changes.Notify()
		}
		if leaf := s.svid.Load().Leaf; s.now().After(halfLife(leaf.NotBefore, leaf.NotAfter)) {
			if err := s.renewServerSVID(); err != nil {
				s.log.Error("server svid renewal failed; will retry", "error", err)
			}
		}
	}
}

func halfLife(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) / 2)
}

// renewServerSVID gives the server a fresh TLS identity; its key lives in
// memory only.
func (s *Server) renewServerSVID() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("server: svid key: %w", err)
	}
	chain, err := s.ca.SignX509SVID(key.Public(), naming.ServerID(s.cfg.td), s.cfg.DefaultX509TTL)
	if err != nil {
		return fmt.Errorf("server: own svid: %w", err)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	s.svid.Store(cert)
	return nil
}

// tlsConfig is TLS 1.3 with the server's SVID. A client certificate is
// optional at the handshake (Attest has none), but any certificate given
// must be an SVID that chains to the bundle; each call then demands the
// agent identity it needs.
func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.svid.Load(), nil
		},
		ClientAuth: tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			_, err := s.verifyPeer(raw)
			return err
		},
	}
}
