package proxy

import (
	"errors"
	"fmt"
	"github.com/sigil-mesh/sigil/pathnorm"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Config is what `sigil-proxy run` takes.
type Config struct {
	Socket   string
	Service  string
	Labels   []string // K=V
	App      string
	Inbound  string
	Outbound string
	Admin    string
	// Policy is a .rego file or a directory of them (--policy): the
	// enforced policy, over any Policy resource of mode enforce. ""
	// takes the enforced policy from Policy resources (until one
	// arrives, every request is denied).
	Policy      string
	Upstreams   []string // NAME=HOST:PORT[,HOST:PORT...][@SPIFFE-ID]
	Transparent bool
	// ClusterDomain ends the longest form of a mesh host,
	// svc.ns.svc.<ClusterDomain> (Kubernetes' term); "" is cluster.local.
	ClusterDomain string
	DrainGrace    time.Duration // how long to keep serving after leaving the endpoint pool
	IdleTimeout   time.Duration // a connection silent this long is closed
	Advertise     string        // inbound address other sidecars reach; default: the bound one
	AccessLog     string        // file path, "-" for stdout, "" for none
	DecisionLog   string
	// OTLPEndpoint is the OTLP/HTTP collector spans go to ("" for no
	// tracing); TraceSampling the share of new traces sampled.
	OTLPEndpoint  string
	TraceSampling float64
	// Listener limits (see docs/limits.md, "Listeners and HTTP/2"); a
	// zero cap is sized from the process's file-descriptor limit.
	InboundMaxConnections  int
	OutboundMaxConnections int
	InboundMaxHandshakes   int
	// MinRequestBodyRate is the rate (bytes/s) below which a request body
	// is cut off after MinRequestBodyGrace; 0 turns the check off.
	MinRequestBodyRate  int
	MinRequestBodyGrace time.Duration
	// HTTP2MaxResets and HTTP2MaxControlFrames bound the RST_STREAM frames
	// beyond the streams not reset, and the unearned control frames
	// (package h2abuse), one HTTP/2 client connection may send per 10 s; a
	// connection past them is closed with GOAWAY ENHANCE_YOUR_CALM.
	HTTP2MaxResets        int
	HTTP2MaxControlFrames int
	// AppUID and AppGID, when 0 or more, are the only owners whose local
	// connections the outbound listener takes (either may match); -1: any.
	AppUID int
	AppGID int
	// PathWithEscapedSlashes is what becomes of "%2F" and "%5C" in a
	// request path: "decode" (also ""), "keep" or "reject" (Envoy's
	// path_with_escaped_slashes_action; see package pathnorm).
	PathWithEscapedSlashes string
	// Namespace is the workload's namespace (--namespace): "" takes the
	// one in its SPIFFE ID, or "default" for an ID without one; for an ID
	// of the form spiffe://td/ns/<ns>/sa/<sa>, any other value is refused
	// at start (naming.WorkloadNamespace).
	Namespace string
	// StatsInterval is how often the sidecar sends its golden metrics to
	// its agent (--stats-interval): 1s to 1m; 0 is DefaultStatsInterval.
	StatsInterval time.Duration
	// AuditExport are where decisions go (--audit-export): "agent" (the
	// default when empty), "none", or sink specs (package sink), which
	// replace the agent unless it is named too.
	AuditExport []string
	// AuditSpoolDir holds the audit spool (default: a per-user directory
	// under os.TempDir, by service and inbound port); AuditSpoolMaxBytes
	// bounds it (0: DefaultAuditSpoolMaxBytes).
	AuditSpoolDir      string
	AuditSpoolMaxBytes int64
	// AuditFailureModeAllow, when false, denies with 503 a request whose
	// decision cannot be recorded (Envoy ext_authz's failure_mode_allow).
	AuditFailureModeAllow bool
	// DecisionLogMask are the input paths erased from recorded decisions
	// (nil: policy.DefaultMask).
	DecisionLogMask []string
	// InboundEventLoop serves HTTP/1.1 from other sidecars on an event
	// loop (package proxy/loop) instead of a goroutine per connection
	// (--inbound-event-loop; Linux only). Each request is admitted,
	// decided and recorded as on the goroutine path; a connection whose
	// next request is an Upgrade (WebSocket), CONNECT or HTTP/1.0 goes
	// back to the goroutine path.
	InboundEventLoop bool
	// OutboundEventLoop serves the app's HTTP/1.1 requests on an event
	// loop (--outbound-event-loop; Linux only), with a pool of its own
	// of mTLS connections to other sidecars. A request whose route needs
	// what the loop does not carry (outboundloop.go) goes, with the rest
	// of its connection, to the goroutine path.
	OutboundEventLoop bool
}

// DefaultStatsInterval is how often a sidecar reports its golden metrics
// to its agent, and the agent its node's to the server: the server's
// window has 10 s resolution.
const DefaultStatsInterval = 10 * time.Second

// Defaults from DESIGN.md.
const (
	DefaultOutbound = "127.0.0.1:15001"
	DefaultInbound  = "0.0.0.0:15006"
	DefaultAdmin    = "127.0.0.1:15000"
	// DefaultClusterDomain is Kubernetes' default cluster domain.
	DefaultClusterDomain = naming.DefaultClusterDomain
)

// Upstream is a service the app may call and where its sidecars listen.
type Upstream struct {
	Name      string
	Endpoints []naming.Endpoint
	// ID is the identity the service's sidecars must present; zero means
	// any identity of the trust domain (logged as a warning at start).
	ID spiffeid.ID
}

// checked is a validated Config.
type checked struct {
	Config
	labels    map[string]string
	upstreams map[string]*Upstream
	appPort   int
	otlpURL   string
	paths     pathnorm.Options
	audit     auditConfig
}

// ParseUpstream reads NAME=HOST:PORT[,HOST:PORT...][@SPIFFE-ID].
func ParseUpstream(s string) (*Upstream, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" || rest == "" {
		return nil, fmt.Errorf("proxy: --upstream %q: want NAME=HOST:PORT[,HOST:PORT...][@SPIFFE-ID]", s)
	}
	if err := validName(name); err != nil {
		return nil, fmt.Errorf("proxy: --upstream %q: %w", s, err)
	}
	u := &Upstream{Name: name}
	addrs, id, hasID := strings.Cut(rest, "@")
	if hasID {
		parsed, err := naming.ParseAnyWorkloadID(id)
		if err != nil {
			return nil, fmt.Errorf("proxy: --upstream %q: identity: %w", s, err)
		}
		u.ID = parsed
	}
	for _, a := range strings.Split(addrs, ",") {
		ep, err := naming.ParseEndpoint(a)
		if err != nil {
			return nil, fmt.Errorf("proxy: --upstream %q: %w", s, err)
		}
		u.Endpoints = append(u.Endpoints, ep)
	}
	return u, nil
}

// validName accepts an empty name (the caller requires one where it must)
// or a service name (naming.ValidServiceName).
func validName(name string) error {
	if name != "" && !naming.ValidServiceName(name) {
		return fmt.Errorf("proxy: service name %s: only a-z, 0-9 and inner '-', at most 63 characters", naming.Quote(name))
	}
	return nil
}

func checkAddr(flag, addr string, errs *[]error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		*errs = append(*errs, fmt.Errorf("proxy: %s %q: %w", flag, addr, err))
	}
}

// Validate checks every flag and returns all problems at once.
func (c Config) Validate() (*checked, error) {
	var errs []error
	out := &checked{Config: c, labels: map[string]string{}, upstreams: map[string]*Upstream{}}
	if c.Socket == "" {
		errs = append(errs, errors.New("proxy: --socket is required"))
	}
	if err := validName(c.Service); c.Service == "" || err != nil {
		errs = append(errs, fmt.Errorf("proxy: --service %q: required, %v", c.Service, err))
	}
	if c.App == "" {
		errs = append(errs, errors.New("proxy: --app is required"))
	} else if ap, err := netip.ParseAddrPort(c.App); err == nil {
		out.appPort = int(ap.Port())
	} else if _, port, err := net.SplitHostPort(c.App); err == nil {
		out.appPort, _ = strconv.Atoi(port)
	} else {
		errs = append(errs, fmt.Errorf("proxy: --app %q: %w", c.App, err))
	}
	checkAddr("--inbound", c.Inbound, &errs)
	checkAddr("--outbound", c.Outbound, &errs)
	checkAddr("--admin", c.Admin, &errs)
	checkAudit(c, out, &errs)
	if c.IdleTimeout < time.Second {
		errs = append(errs, fmt.Errorf("proxy: --idle-timeout %s: want at least 1s", c.IdleTimeout))
	}
	if c.StatsInterval == 0 {
		out.StatsInterval = DefaultStatsInterval
	} else if c.StatsInterval < time.Second || c.StatsInterval > time.Minute {
		errs = append(errs, fmt.Errorf("proxy: --stats-interval %s: want 1s to 1m", c.StatsInterval))
	}
	if c.DrainGrace < 0 || c.DrainGrace > time.Minute {
		errs = append(errs, fmt.Errorf("proxy: --drain-grace %s: want 0 to 1m", c.DrainGrace))
	}
	if c.Advertise != "" {
		if ep, err := naming.ParseEndpoint(c.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("proxy: --advertise: %w", err))
		} else if !ep.Addr().IsValid() {
			errs = append(errs, fmt.Errorf("proxy: --advertise %q: want IP:PORT", c.Advertise))
		}
	}
	if c.ClusterDomain == "" {
		out.ClusterDomain = DefaultClusterDomain
	} else if _, err := naming.NewResolver(naming.DefaultNamespace, c.ClusterDomain); err != nil {
		errs = append(errs, fmt.Errorf("proxy: --cluster-domain %q: want a DNS name such as cluster.local", c.ClusterDomain))
	}
	if c.Namespace != "" && !naming.ValidNamespace(c.Namespace) {
		errs = append(errs, fmt.Errorf("proxy: --namespace %s %s", naming.Quote(c.Namespace), naming.NamespaceRule))
	}
	if c.OTLPEndpoint != "" {
		u, err := checkOTLPEndpoint(c.OTLPEndpoint)
		if err != nil {
			errs = append(errs, err)
		}
		out.otlpURL = u
	}
	for _, f := range []struct {
		flag string
		v    int
	}{{"--inbound-max-connections", c.InboundMaxConnections}, {"--outbound-max-connections", c.OutboundMaxConnections}, {"--inbound-max-handshakes", c.InboundMaxHandshakes}, {"--min-request-body-rate", c.MinRequestBodyRate}, {"--http2-max-resets", c.HTTP2MaxResets}, {"--http2-max-control-frames", c.HTTP2MaxControlFrames}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("proxy: %s %d: want 0 or more", f.flag, f.v))
		}
	}
	if c.AppUID < -1 || c.AppGID < -1 {
		errs = append(errs, fmt.Errorf("proxy: --app-uid %d / --app-gid %d: want a uid or gid (0 or more)", c.AppUID, c.AppGID))
	}
	if c.MinRequestBodyRate > 0 && c.MinRequestBodyGrace < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("proxy: --min-request-body-grace %s: want at least 100ms", c.MinRequestBodyGrace))
	}
	if c.PathWithEscapedSlashes != "" {
		var err error
		if out.paths.EscapedSlashes, err = pathnorm.ParseEscapedSlashes(c.PathWithEscapedSlashes); err != nil {
			errs = append(errs, fmt.Errorf("proxy: --path-with-escaped-slashes: %w", err))
		}
	}
	if c.TraceSampling < 0 || c.TraceSampling > 1 {
		errs = append(errs, fmt.Errorf("proxy: --trace-sampling %v: want 0 to 1", c.TraceSampling))
	}
	for _, l := range c.Labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			errs = append(errs, fmt.Errorf("proxy: --label %q: want KEY=VALUE", l))
			continue
		}
		if err := naming.ValidateLabel(k, v); err != nil {
			errs = append(errs, fmt.Errorf("proxy: --label: %w", err))
			continue
		}
		out.labels[k] = v
	}
	for _, s := range c.Upstreams {
		u, err := ParseUpstream(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := out.upstreams[u.Name]; dup {
			errs = append(errs, fmt.Errorf("proxy: --upstream %s given twice", u.Name))
		}
		out.upstreams[u.Name] = u
	}
	if len(errs) > 0 {
		// The first problem's own prefix is dropped: the text carries
		// "proxy: " once at its front, then once per further line.
		return nil, fmt.Errorf("proxy: invalid configuration: %w", unprefixed{errors.Join(errs...)})
	}
	return out, nil
}

// upstreamNames lists the configured upstreams, sorted.
func (c *checked) upstreamNames() []string {
	names := make([]string, 0, len(c.upstreams))
	for n := range c.upstreams {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// unprefixed shows a proxy error without its "proxy: " prefix, to wrap it
// in another proxy error; errors.Is and errors.As see through it.
type unprefixed struct{ err error }

func (u unprefixed) Error() string { return strings.TrimPrefix(u.err.Error(), "proxy: ") }
func (u unprefixed) Unwrap() error { return u.err }
