package server

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/dashboard"
	"github.com/sigil-mesh/sigil/telemetry/window"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Config is what `sigil-server run` takes, before it is checked.
type Config struct {
	DataDir        string
	TrustDomain    string
	Bind           string
	DefaultX509TTL time.Duration
	// AgentX509TTL is the life of agents' own SVIDs (SPIRE's agent_ttl);
	// 0 means DefaultX509TTL. An agent cut off from the server for longer
	// must re-attest.
	AgentX509TTL  time.Duration
	DefaultJWTTTL time.Duration
	CATTL         time.Duration
	RootTTL       time.Duration
	UpstreamCert  string
	UpstreamKey   string
	KMS           string
	// MaxResourceBytes bounds one configuration resource's encoded size
	// (--max-resource-bytes); MaxConfigBytes bounds them all together
	// (--max-config-bytes). Zero takes the default.
	MaxResourceBytes int64
	MaxConfigBytes   int64
	// StatsMaxKeys bounds the distinct keys of golden metrics the server's
	// window holds (--stats-max-keys); 0 takes window.DefaultMaxKeys.
	StatsMaxKeys int
	// AuditExport are the audit stream's exporters (--audit-export, sink
	// specs: package sink); none means no stream (see auditexport.go).
	AuditExport []string
	// AuditSpoolMaxBytes bounds the audit spool in the data dir (0:
	// DefaultAuditSpoolMaxBytes).
	AuditSpoolMaxBytes int64
	// Dashboard is the dashboard's HOST:PORT (--dashboard); "" serves
	// none. Off loopback it needs DashboardTLS, which serves it over TLS
	// 1.3 to clients presenting an X.509-SVID of one of DashboardAdminIDs
	// (--dashboard-tls, --dashboard-admin-id); see package dashboard.
	Dashboard         string
	DashboardTLS      bool
	DashboardAdminIDs []string
	// Kubernetes says whether and how the server works against a
	// Kubernetes API server (server/k8s.go); off on plain hosts.
	Kubernetes KubeConfig
}

// Defaults for Config, as DESIGN.md fixes them.
const (
	DefaultBind    = "0.0.0.0:8081"
	DefaultX509TTL = time.Hour
	DefaultJWTTTL  = 5 * time.Minute
	// MinSVIDTTL is the shortest SVID life accepted; tests use 20s.
	MinSVIDTTL = 10 * time.Second
	// DefaultDashboard is --dashboard's default (DESIGN.md: the server's
	// web dashboard and /metrics on 127.0.0.1:8080).
	DefaultDashboard = dashboard.DefaultAddr
	// DefaultStatsMaxKeys is --stats-max-keys' default.
	DefaultStatsMaxKeys = window.DefaultMaxKeys
	// MaxStatsMaxKeys is the largest --stats-max-keys: memory grows with
	// the keys held (bench/README.md, "Golden-metrics window").
	MaxStatsMaxKeys = 1_000_000
)

// checked is a Config that passed Validate, with values parsed.
type checked struct {
	Config
	td        spiffeid.TrustDomain
	upstream  *ca.Upstream
	dashboard dashboard.ListenRule
}

// Validate checks every field and returns all problems at once, each
// named by its flag. `run` and any dry run share it.
func (c Config) Validate() (*checked, error) {
	var errs []error
	out := &checked{Config: c}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	} else if abs, err := filepath.Abs(c.DataDir); err == nil {
		out.DataDir = abs
	}
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		errs = append(errs, fmt.Errorf("--trust-domain %q: %w", c.TrustDomain, err))
	}
	out.td = td
	if _, _, err := net.SplitHostPort(c.Bind); err != nil {
		errs = append(errs, fmt.Errorf("--bind %q: %w", c.Bind, err))
	}
	if c.DefaultX509TTL < MinSVIDTTL {
		errs = append(errs, fmt.Errorf("--default-x509-ttl %s: must be at least %s", c.DefaultX509TTL, MinSVIDTTL))
	}
	if out.AgentX509TTL == 0 {
		out.AgentX509TTL = c.DefaultX509TTL
	}
	if out.AgentX509TTL < MinSVIDTTL || out.AgentX509TTL > adminv1.MaxSVIDTTL {
		errs = append(errs, fmt.Errorf("--agent-x509-ttl %s: must be between %s and %s", out.AgentX509TTL, MinSVIDTTL, adminv1.MaxSVIDTTL))
	}
	if c.DefaultJWTTTL < MinSVIDTTL {
		errs = append(errs, fmt.Errorf("--default-jwt-ttl %s: must be at least %s", c.DefaultJWTTTL, MinSVIDTTL))
	}
	if c.CATTL != 0 && c.CATTL < 2*c.DefaultX509TTL {
		errs = append(errs, fmt.Errorf("--ca-ttl %s: must be at least twice --default-x509-ttl", c.CATTL))
	}
	if out.MaxResourceBytes == 0 {
		out.MaxResourceBytes = DefaultMaxResourceBytes
	}
	if out.MaxConfigBytes == 0 {
		out.MaxConfigBytes = DefaultMaxConfigBytes
	}
	if out.MaxResourceBytes < 1024 || out.MaxResourceBytes > MaxResourceBytesCeiling {
		errs = append(errs, fmt.Errorf("--max-resource-bytes %d: want 1024 to %d (a resource travels whole in one gRPC message)", out.MaxResourceBytes, MaxResourceBytesCeiling))
	}
	if out.MaxConfigBytes < out.MaxResourceBytes {
		errs = append(errs, fmt.Errorf("--max-config-bytes %d: must be at least --max-resource-bytes (%d)", out.MaxConfigBytes, out.MaxResourceBytes))
	}
	errs = append(errs, checkAuditExport(c)...)
	errs = append(errs, out.Kubernetes.check()...)
	errs = append(errs, out.checkHA()...)
	if out.StatsMaxKeys == 0 {
		out.StatsMaxKeys = DefaultStatsMaxKeys
	}
	if out.StatsMaxKeys < 1 || out.StatsMaxKeys > MaxStatsMaxKeys {
		errs = append(errs, fmt.Errorf("--stats-max-keys %d: want 1 to %d", out.StatsMaxKeys, MaxStatsMaxKeys))
	}
	if !td.IsZero() {
		rule, err := dashboard.CheckListen(c.Dashboard, c.DashboardTLS, c.DashboardAdminIDs, td)
		if err != nil {
			errs = append(errs, err)
		}
		out.dashboard = rule
	}
	if (c.UpstreamCert == "") != (c.UpstreamKey == "") {
		errs = append(errs, errors.New("--upstream-cert and --upstream-key go together"))
	} else if c.UpstreamCert != "" {
		up, err := ca.LoadUpstream(c.UpstreamCert, c.UpstreamKey)
		if err != nil {
			errs = append(errs, err)
		}
		out.upstream = up
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("server: invalid configuration: %w", errors.Join(errs...))
	}
	return out, nil
}
