// Command sigil-proxy is Sigil's sidecar proxy.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/sigil-mesh/sigil/cmd/internal/logflag"
	"github.com/sigil-mesh/sigil/policy"
	"github.com/sigil-mesh/sigil/proxy"
	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{Use: "sigil-proxy", Short: "Sigil's sidecar proxy", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newRun(), newIptables(), newReady())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sigil-proxy:", err)
		os.Exit(1)
	}
}

func newRun() *cobra.Command {
	var cfg proxy.Config
	var logger func() (*slog.Logger, error)
	var maxProcs int
	cmd := &cobra.Command{
		Use: "run", Short: "Run the sidecar", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if maxProcs < 0 {
				return fmt.Errorf("--max-procs %d: want 0 (every core) or more", maxProcs)
			}
			if maxProcs > 0 {
				runtime.GOMAXPROCS(maxProcs)
			}
			return logflag.RunE(logger, func(ctx context.Context, log *slog.Logger) error { return proxy.Run(ctx, cfg, log) })(cmd, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Socket, "socket", "/run/sigil/agent.sock", "the agent's Workload API socket")
	f.StringVar(&cfg.Service, "service", "", "name of the service this sidecar fronts (required)")
	f.StringArrayVar(&cfg.Labels, "label", nil, "KEY=VALUE label of this endpoint, such as version=v1 (repeatable)")
	f.StringVar(&cfg.App, "app", "", "HOST:PORT of the local app (required)")
	f.StringVar(&cfg.Inbound, "inbound", proxy.DefaultInbound, "HOST:PORT for mTLS from other sidecars")
	f.StringVar(&cfg.Outbound, "outbound", proxy.DefaultOutbound, "HOST:PORT the app sends its outbound traffic to (HTTP proxy, or iptables target)")
	f.StringVar(&cfg.Admin, "admin", proxy.DefaultAdmin, "HOST:PORT for /metrics, /ready and /config")
	f.StringVar(&cfg.Policy, "policy", "", "Rego policy: a .rego file or a directory of them, the enforced policy (over a Policy resource of mode enforce); without it, the enforced policy comes from Policy resources, and every request is denied until one arrives (docs/policy-resource.md)")
	f.StringArrayVar(&cfg.Upstreams, "upstream", nil, "NAME=HOST:PORT[,HOST:PORT...][@SPIFFE-ID]: where a service's sidecars listen and who they must be (repeatable)")
	f.StringVar(&cfg.Advertise, "advertise", "", "IP:PORT other sidecars reach this one's inbound at (default: the --inbound address, when it names an IP)")
	f.DurationVar(&cfg.DrainGrace, "drain-grace", time.Second, "on SIGTERM, keep serving this long after leaving the endpoint pool, so callers stop choosing this sidecar first")
	f.DurationVar(&cfg.StatsInterval, "stats-interval", proxy.DefaultStatsInterval, "send the golden metrics (request counts, latency histograms, denials) to the agent this often; 1s to 1m")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", 5*time.Minute, "close a connection (app or peer side, HTTP or TCP) that sends nothing for this long")
	f.StringVar(&cfg.Namespace, "namespace", "", "the workload's namespace, for plain hosts whose SPIFFE IDs are not of the form spiffe://TD/ns/NS/sa/SA (default: the ID's namespace, else default); refused when it disagrees with such an ID")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", proxy.DefaultClusterDomain, "DNS domain of the mesh: the app names a service svc, svc.ns, svc.ns.svc or svc.ns.svc.<cluster-domain>; any other host is not in the mesh (502)")
	f.BoolVar(&cfg.Transparent, "transparent", false, "route redirected connections by their original destination (see `sigil-proxy iptables`)")
	f.StringVar(&cfg.AccessLog, "access-log", "", "access log file (JSON lines); - for stdout")
	f.StringVar(&cfg.DecisionLog, "decision-log", "", "decision log file (OPA decision-log JSON lines); - for stdout")
	f.StringArrayVar(&cfg.AuditExport, "audit-export", nil, "where decisions are exported (repeatable): agent (the default: through the agent to the server's audit stream), none, or an exporter spec such as https://collector/logs (see docs/audit.md)")
	f.StringVar(&cfg.AuditSpoolDir, "audit-spool-dir", "", "directory of the decision export's on-disk spool, one process at a time (default: $TMPDIR/sigil-proxy-UID/audit-SERVICE-INBOUNDPORT, or ...-pidPID for port 0)")
	f.Int64Var(&cfg.AuditSpoolMaxBytes, "audit-spool-max-bytes", proxy.DefaultAuditSpoolMaxBytes, "bytes the decision export's spool may hold on disk; past them decisions are dropped, counted and recorded as a gap")
	f.BoolVar(&cfg.AuditFailureModeAllow, "audit-failure-mode-allow", true, "serve a request whose decision cannot be recorded for export (spool full, I/O error); false denies it with 503, as Envoy ext_authz's failure_mode_allow")
	f.StringArrayVar(&cfg.DecisionLogMask, "decision-log-mask", policy.DefaultMask, "input path erased from decision logs and exported decisions (repeatable; OPA's mask paths, such as /input/request/headers/authorization); giving it replaces the default list")
	f.StringVar(&cfg.PathWithEscapedSlashes, "path-with-escaped-slashes", "decode", "what becomes of %2F and %5C in a request path, before routing and authorization: decode (into separators, Istio's DECODE_AND_MERGE_SLASHES), keep, or reject (400); see docs/security.md")
	f.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", "", "export a span per request to this OTLP/HTTP collector, such as http://127.0.0.1:4318")
	f.Float64Var(&cfg.TraceSampling, "trace-sampling", 0.01, "share of new traces sampled, 0 to 1 (a caller's traceparent decides for its own)")
	f.IntVar(&cfg.InboundMaxConnections, "inbound-max-connections", 0, "connections the inbound listener keeps open at once; more are refused at accept (0: sized from the open-file limit, see docs/limits.md)")
	f.IntVar(&cfg.OutboundMaxConnections, "outbound-max-connections", 0, "connections the outbound listener keeps open at once; more are refused at accept (0: sized from the open-file limit)")
	f.IntVar(&cfg.InboundMaxHandshakes, "inbound-max-handshakes", 0, "TLS handshakes in progress at once on the inbound listener; more connections are refused at accept (0: a quarter of the inbound cap)")
	f.IntVar(&cfg.MinRequestBodyRate, "min-request-body-rate", 240, "bytes/s a request body must keep up, measured over windows of --min-request-body-grace after one such grace period; slower bodies are cut off (0: no minimum)")
	f.DurationVar(&cfg.MinRequestBodyGrace, "min-request-body-grace", 5*time.Second, "grace period and measuring window of --min-request-body-rate")
	f.IntVar(&cfg.HTTP2MaxResets, "http2-max-resets", 200, "RST_STREAM frames one HTTP/2 client connection may send per 10s beyond the streams it opened and did not reset (so at most half its streams reset, as Envoy's premature-reset rule) before it is closed with GOAWAY ENHANCE_YOUR_CALM (rapid reset); earlier releases counted every reset (0: no limit)")
	f.IntVar(&cfg.HTTP2MaxControlFrames, "http2-max-control-frames", 1000, "SETTINGS, PING, PRIORITY, zero WINDOW_UPDATE and empty DATA frames one HTTP/2 client connection may send per 10s beyond those it earned (one per HEADERS or DATA frame sent to it and per stream it opens, as grpc-go's ping policy) before it is closed with GOAWAY ENHANCE_YOUR_CALM; earlier releases counted earned ones too (0: no limit)")
	f.BoolVar(&cfg.InboundEventLoop, "inbound-event-loop", false, "serve HTTP/1.1 from other sidecars on an event loop (one goroutine for all connections, proxy/loop) instead of a goroutine per connection; same policy, audit, metrics and tracing per request; a connection that asks for a WebSocket, CONNECT or HTTP/1.0 goes back to a goroutine (experimental, Linux only)")
	f.BoolVar(&cfg.OutboundEventLoop, "outbound-event-loop", false, "serve the app's HTTP/1.1 requests on an event loop (proxy/loop) with a pool of its own of mTLS connections to other sidecars; a request whose route uses fault injection, mirroring, CORS, response header changes, a per-try timeout, HTTP/2 between sidecars, connection pool limits or a host outside the mesh goes, with the rest of its connection, back to a goroutine (experimental, Linux only)")
	f.IntVar(&cfg.AppUID, "app-uid", -1, "take outbound connections only from local sockets of this uid (checked with the kernel, NETLINK_SOCK_DIAG); others are refused (-1: any local user, logged as a warning)")
	f.IntVar(&cfg.AppGID, "app-gid", -1, "take outbound connections also from processes with this group, effective or supplementary (-1: none)")
	// A sidecar shares its node with its app: one core by default, as
	// Linkerd's proxy. It also spends less CPU per request than with two,
	// for the same saturation throughput (bench/README.md, "Figures once
	// quoted in the code").
	f.IntVar(&maxProcs, "max-procs", 1, "cores the sidecar may use at once (GOMAXPROCS); 0 for all")
	logger = logflag.Register(cmd)
	return cmd
}
