// Command sigil-server runs Sigil's certificate authority and registry, and
// administers a running one through its admin socket.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/atomicfile"
	"github.com/sigil-mesh/sigil/cmd/internal/logflag"
	"github.com/sigil-mesh/sigil/cmd/internal/termsafe"
	"github.com/sigil-mesh/sigil/k8s/inject"
	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/server"
	"github.com/spf13/cobra"
)

func main() {
	// No control character from a stored record reaches the terminal.
	os.Exit(termsafe.Main(newRoot(), "sigil-server"))
}

func newRoot() *cobra.Command {
	root := &cobra.Command{Use: "sigil-server", Short: "Sigil's certificate authority and registry", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newRun(), newBundle(), newToken(), newEntry(), newAgent())
	return root
}

func newRun() *cobra.Command {
	var cfg server.Config
	var logger func() (*slog.Logger, error)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return logflag.RunE(logger, func(ctx context.Context, log *slog.Logger) error { return server.Run(ctx, cfg, log) })(cmd, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the registry, keys and audit trail (required)")
	f.StringVar(&cfg.TrustDomain, "trust-domain", "", "trust domain, fixed at first start, such as example.org (required)")
	f.StringVar(&cfg.Bind, "bind", server.DefaultBind, "HOST:PORT of the agent API")
	f.DurationVar(&cfg.DefaultX509TTL, "default-x509-ttl", server.DefaultX509TTL, "X.509-SVID lifetime when an entry sets none")
	f.DurationVar(&cfg.AgentX509TTL, "agent-x509-ttl", 0, "lifetime of agents' own X.509-SVIDs (default: --default-x509-ttl); an agent cut off from the server longer than this must re-attest")
	f.DurationVar(&cfg.DefaultJWTTTL, "default-jwt-ttl", server.DefaultJWTTTL, "JWT-SVID lifetime when an entry sets none")
	f.DurationVar(&cfg.CATTL, "ca-ttl", 0, "lifetime of the signing intermediate and JWT key (default 24h)")
	f.DurationVar(&cfg.RootTTL, "root-ttl", 0, "lifetime of a root made by the server (default 8760h)")
	f.StringVar(&cfg.UpstreamCert, "upstream-cert", "", "PEM chain of an existing CA to sign Sigil's intermediate: signing cert first, root last")
	f.StringVar(&cfg.UpstreamKey, "upstream-key", "", "PEM key of --upstream-cert's first certificate")
	f.Int64Var(&cfg.MaxResourceBytes, "max-resource-bytes", server.DefaultMaxResourceBytes, "largest configuration resource accepted, encoded, in bytes (at most 2 MiB)")
	f.Int64Var(&cfg.MaxConfigBytes, "max-config-bytes", server.DefaultMaxConfigBytes, "largest total configuration accepted, encoded, in bytes")
	f.StringArrayVar(&cfg.AuditExport, "audit-export", nil, "export the audit stream (CA events and the sidecars' decisions) to this receiver (repeatable), such as https://collector/logs (OPA's decision-log upload API); see docs/audit.md")
	f.Int64Var(&cfg.AuditSpoolMaxBytes, "audit-spool-max-bytes", server.DefaultAuditSpoolMaxBytes, "bytes the audit stream's spool (DATA-DIR/audit-spool) may hold; past them CA events are dropped (counted, and recorded as a gap) and sidecars' batches refused until exporters catch up")
	f.IntVar(&cfg.StatsMaxKeys, "stats-max-keys", server.DefaultStatsMaxKeys, "most distinct golden-metric keys (reporter, identities, service, subset, route, protocol) the server's 15-minute window holds; series of further keys are dropped (memory grows with it: see bench/README.md)")
	f.StringVar(&cfg.Dashboard, "dashboard", server.DefaultDashboard, "HOST:PORT of the web dashboard and the server's /metrics; \"\" serves none; off loopback it needs --dashboard-tls")
	f.BoolVar(&cfg.DashboardTLS, "dashboard-tls", false, "serve the dashboard over TLS 1.3 with the server's SVID, only to clients presenting an X.509-SVID of a --dashboard-admin-id")
	f.StringArrayVar(&cfg.DashboardAdminIDs, "dashboard-admin-id", nil, "a SPIFFE ID allowed into the dashboard over --dashboard-tls (repeatable)")
	f.StringVar(&cfg.KMS, "kms", "softkms:", "key manager URI (go.step.sm/crypto kms); softkms keeps 0600 key files in the data dir")
	f.BoolVar(&cfg.Kubernetes.Enabled, "kubernetes", false, "run against a Kubernetes API server: projected-token node attestation, automatic ns/sa identities, Services, CRDs, the injection webhook, leader election (docs/kubernetes.md)")
	f.StringVar(&cfg.Kubernetes.Kubeconfig, "kubeconfig", "", "kubeconfig file with --kubernetes (default: the pod's in-cluster service account)")
	f.StringVar(&cfg.Kubernetes.Cluster, "k8s-cluster", server.DefaultK8sCluster, "this cluster's name in agent IDs: spiffe://TD/sigil/agent/k8s_psat/CLUSTER/NODE")
	f.StringVar(&cfg.Kubernetes.Namespace, "k8s-namespace", kube.DefaultNamespace, "namespace of Sigil's own objects (leases, the CA Secret, the root namespace of mesh-wide Policies)")
	f.StringVar(&cfg.Kubernetes.Leader.PodName, "k8s-pod-name", "", "this replica's pod name in the sigil-server Lease, with --kubernetes (default $HOSTNAME)")
	f.StringVar(&cfg.Kubernetes.Leader.AdvertiseAddress, "k8s-advertise-address", "", "HOST:PORT agents reach this replica's agent API at when it leads, with --kubernetes (default the --bind address, $POD_IP for 0.0.0.0)")
	f.DurationVar(&cfg.Kubernetes.Leader.LeaseDuration, "leader-elect-lease-duration", 0, "how long followers wait after the leader's last renewal of the Lease before one takes over, with --kubernetes (default 15s)")
	f.DurationVar(&cfg.Kubernetes.Leader.RenewDeadline, "leader-elect-renew-deadline", 0, "how long the leader retries renewing the Lease before it stops signing, with --kubernetes (default 10s; less than the lease duration)")
	f.DurationVar(&cfg.Kubernetes.Leader.RetryPeriod, "leader-elect-retry-period", 0, "how often replicas try to take or renew the Lease, with --kubernetes (default 2s)")
	f.StringArrayVar(&cfg.Kubernetes.PSATAllowedSAs, "k8s-psat-allowed-sa", nil, "a service account, NAMESPACE:NAME, whose projected token (audience sigil-server) attests a node (repeatable; default K8S_NAMESPACE:sigil-agent, --k8s-namespace's agents)")
	f.Var(offSwitch{&cfg.Kubernetes.DisableAutoIdentity}, "k8s-auto-identity", "with --kubernetes, give every pod spiffe://TD/ns/NS/sa/SA from its node's agent with no entry (false: entries only)")
	f.Lookup("k8s-auto-identity").NoOptDefVal = "true"
	f.StringVar(&cfg.Kubernetes.Inject.Bind, "webhook-bind", server.DefaultWebhookBind, "HOST:PORT of the sidecar injection webhook (HTTPS, certificate from Sigil's CA) with --kubernetes; \"\" serves none")
	f.StringVar(&cfg.Kubernetes.Inject.ConfigName, "webhook-config-name", inject.DefaultWebhookConfig, "MutatingWebhookConfiguration whose caBundle the server keeps equal to its trust bundle")
	f.StringArrayVar(&cfg.Kubernetes.Inject.TLSSANs, "webhook-tls-san", nil, "DNS name or IP the webhook's certificate also names, beside sigil-server.NAMESPACE.svc[.cluster.local] (repeatable; for a webhook configuration that calls a URL)")
	f.StringVar(&cfg.Kubernetes.Inject.ProxyImage, "inject-proxy-image", inject.DefaultImage, "image of the injected sidecar and iptables step: sigil-proxy and iptables on its PATH (built from deploy/Dockerfile; none is published)")
	f.StringVar(&cfg.Kubernetes.Inject.ProxyCPU, "inject-proxy-cpu", inject.DefaultCPURequest, "CPU request of the injected sidecar and iptables step")
	f.StringVar(&cfg.Kubernetes.Inject.ProxyMemory, "inject-proxy-memory", inject.DefaultMemoryRequest, "memory request of the injected sidecar and iptables step")
	logger = logflag.Register(cmd)
	return cmd
}

// adminFlags are the flags every admin subcommand shares.
type adminFlags struct{ dataDir string }

func (a *adminFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.dataDir, "data-dir", "", "the running server's data dir (required)")
}

func (a *adminFlags) client() (*adminv1.AdminClient, error) {
	if a.dataDir == "" {
		return nil, errors.New("--data-dir is required")
	}
	return adminv1.NewAdminClient(adminv1.AdminSocket(a.dataDir)), nil
}

func newBundle() *cobra.Command {
	cmd := &cobra.Command{Use: "bundle", Short: "Trust bundle"}
	var a adminFlags
	var format string
	show := &cobra.Command{
		Use: "show", Short: "Print the trust bundle (PEM by default)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			b, err := c.Bundle(cmd.Context(), format)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	a.register(show)
	show.Flags().StringVar(&format, "format", "pem", "pem or spiffe (JWKS-based SPIFFE bundle)")
	cmd.AddCommand(show)
	return cmd
}

func newToken() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Join tokens"}
	var a adminFlags
	var node, output string
	var ttl time.Duration
	gen := &cobra.Command{
		Use: "generate", Short: "Print a single-use join token for a node", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if node == "" {
				return errors.New("--node is required")
			}
			t, err := c.CreateJoinToken(cmd.Context(), node, ttl)
			if err != nil {
				return err
			}
			if output != "" {
				// 0600 from the first byte, replaced whole: an agent
				// re-reading the file never sees half a token.
				if err := atomicfile.Write(output, []byte(t.Token+"\n"), 0o600); err != nil {
					return fmt.Errorf("--output %s: %w", output, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Join token for node %s written to %s (mode 0600), valid until %s\n", t.Node, output, t.ExpiresAt.UTC().Format(time.RFC3339))
				return nil
			}
			// The token alone on stdout, so scripts can take it as it is.
			fmt.Fprintln(cmd.OutOrStdout(), t.Token)
			return nil
		},
	}
	a.register(gen)
	gen.Flags().StringVar(&node, "node", "", "node name; the agent's ID will be spiffe://<td>/sigil/agent/join_token/<node> (required)")
	gen.Flags().DurationVar(&ttl, "ttl", 10*time.Minute, "how long the token may be used")
	gen.Flags().StringVar(&output, "output", "", "write the token to this file (mode 0600, replaced atomically) instead of stdout: the agent's --join-token-file")
	cmd.AddCommand(gen)
	return cmd
}

func newEntry() *cobra.Command {
	cmd := &cobra.Command{Use: "entry", Short: "Registration entries"}
	var a adminFlags
	var req adminv1.EntryRequest
	var output string
	create := &cobra.Command{
		Use: "create", Short: "Grant a SPIFFE ID to workloads with the given selectors on one node", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			e, err := c.CreateEntry(cmd.Context(), req)
			if err != nil {
				return err
			}
			return printEntries(cmd.OutOrStdout(), output, []adminv1.Entry{e})
		},
	}
	a.register(create)
	cf := create.Flags()
	cf.StringVar(&req.ID, "entry-id", "", "the entry's ID, 1 to 64 of A-Z a-z 0-9 . _ - (default: a random one); the same hand-made entry on every server replica of a Kubernetes HA install needs the same ID")
	cf.StringVar(&req.ParentID, "parent-id", "", "the agent whose node the workloads run on (required)")
	cf.StringVar(&req.SPIFFEID, "spiffe-id", "", "the SPIFFE ID to grant (required)")
	cf.StringArrayVar(&req.Selectors, "selector", nil, "a selector such as unix:uid:1000; repeat for more (all must match)")
	cf.DurationVar(&req.X509TTL, "x509-ttl", 0, "X.509-SVID lifetime (default: the server's)")
	cf.DurationVar(&req.JWTTTL, "jwt-ttl", 0, "JWT-SVID lifetime (default: the server's)")
	cf.StringArrayVar(&req.Services, "service", nil, "a service whose endpoints sidecars of this identity may register: NAME in the identity's own namespace (the ID's /ns/<ns>, else default), or NAME.NAMESPACE (repeatable; default: the ID's service account, .../sa/<service>)")
	cf.StringVar(&output, "output", "text", "text or json")

	var la adminFlags
	var parent, listOutput string
	list := &cobra.Command{
		Use: "list", Short: "List entries", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := la.client()
			if err != nil {
				return err
			}
			es, err := c.ListEntries(cmd.Context(), parent)
			if err != nil {
				return err
			}
			return printEntries(cmd.OutOrStdout(), listOutput, es)
		},
	}
	la.register(list)
	list.Flags().StringVar(&parent, "parent-id", "", "only the entries of this agent")
	list.Flags().StringVar(&listOutput, "output", "text", "text or json")

	var da adminFlags
	var id string
	del := &cobra.Command{
		Use: "delete", Short: "Delete an entry", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := da.client()
			if err != nil {
				return err
			}
			if id == "" {
				return errors.New("--id is required")
			}
			e, err := c.DeleteEntry(cmd.Context(), id)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Deleted entry %s (%s)\n", e.ID, e.SPIFFEID)
			return nil
		},
	}
	da.register(del)
	del.Flags().StringVar(&id, "id", "", "entry ID (required)")
	cmd.AddCommand(create, list, del)
	return cmd
}

func printEntries(w io.Writer, format string, es []adminv1.Entry) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(es)
	case "text":
	default:
		return fmt.Errorf("--output %q: want text or json", format)
	}
	if len(es) == 0 {
		fmt.Fprintln(w, "No entries")
	}
	for i, e := range es {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "Entry ID      : %s\nSPIFFE ID     : %s\nParent ID     : %s\nRevision      : %d\nX509-SVID TTL : %s\nJWT-SVID TTL  : %s\nSource        : %s\n",
			e.ID, e.SPIFFEID, e.ParentID, e.Revision, ttlText(e.X509TTL), ttlText(e.JWTTTL), e.Source)
		for _, s := range e.Selectors {
			fmt.Fprintf(w, "Selector      : %s\n", termsafe.Field(s.String()))
		}
		for _, s := range e.Services {
			fmt.Fprintf(w, "Service       : %s\n", termsafe.Field(s))
		}
	}
	return nil
}

func ttlText(d time.Duration) string {
	if d == 0 {
		return "default"
	}
	return d.String()
}

func newAgent() *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "Attested agents"}
	var a adminFlags
	list := &cobra.Command{
		Use: "list", Short: "List attested agents", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			agents, err := c.ListAgents(cmd.Context())
			if err != nil {
				return err
			}
			for _, ag := range agents {
				seen := "never"
				if ag.LastSeen != nil {
					seen = ag.LastSeen.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s  node=%s  svid_expires=%s  state=%s  last_seen=%s\n", ag.SPIFFEID, ag.Node, ag.ExpiresAt.UTC().Format(time.RFC3339), ag.State, seen)
				if ag.State == adminv1.AgentExpired && ag.Attestor == naming.AttestorK8sPSAT {
					fmt.Fprintf(cmd.OutOrStdout(), "  the agent's SVID has expired: it re-attests by itself with its projected token; if it does not, see its pod's log and the server's agent.refused audit records\n")
				} else if ag.State == adminv1.AgentExpired {
					fmt.Fprintf(cmd.OutOrStdout(), "  the agent's SVID has expired: it must re-attest; write a new token (sigil-server token generate --node %s --output FILE) to its --join-token-file\n", ag.Node)
				}
			}
			return nil
		},
	}
	a.register(list)
	evict := agentIDCommand(&a, "evict", "Evict an agent: its node gets no identities until it attests again (a join-token node with a new token; a k8s_psat node re-attests with its projected token at once: agent ban keeps it out)",
		"Evicted", (*adminv1.AdminClient).EvictAgent)
	ban := agentIDCommand(&a, "ban", "Ban an agent (--kubernetes): evict it and issue it no SVID again, whatever it attests with, until agent unban (spire-server agent ban). To remove a Kubernetes node for good, delete the Node and revoke its kubelet credentials",
		"Banned", (*adminv1.AdminClient).BanAgent)
	unban := agentIDCommand(&a, "unban", "Lift an agent's ban: it may attest again (its SVIDs from before the ban stay refused)",
		"Unbanned", (*adminv1.AdminClient).UnbanAgent)
	cmd.AddCommand(list, evict, ban, unban)
	return cmd
}

// agentIDCommand is an agent subcommand use taking --spiffe-id and calling
// call with it, then printing done and the agent.
func agentIDCommand(a *adminFlags, use, short, done string, call func(*adminv1.AdminClient, context.Context, string) (adminv1.Agent, error)) *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				return errors.New("--spiffe-id is required")
			}
			if _, err := naming.ParseAnyAgentID(id); err != nil {
				return fmt.Errorf("--spiffe-id: %w", err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ag, err := call(c, cmd.Context(), id)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s agent %s (node %s)\n", done, ag.SPIFFEID, ag.Node)
			return nil
		},
	}
	a.register(cmd)
	cmd.Flags().StringVar(&id, "spiffe-id", "", "the agent's SPIFFE ID, as agent list shows it (required)")
	return cmd
}
