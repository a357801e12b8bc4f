// Command sigil-agent runs Sigil's node agent, and reads the Workload API
// the way a workload would (`sigil-agent api fetch`).
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/sigil-mesh/sigil/agent"
	"github.com/sigil-mesh/sigil/cmd/internal/logflag"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	root := &cobra.Command{Use: "sigil-agent", Short: "Sigil's node agent", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newRun(), newAPI())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sigil-agent:", err)
		os.Exit(1)
	}
}

func newRun() *cobra.Command {
	var cfg agent.Config
	var logger func() (*slog.Logger, error)
	cmd := &cobra.Command{
		Use: "run", Short: "Run the agent", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return logflag.RunE(logger, func(ctx context.Context, log *slog.Logger) error { return agent.Run(ctx, cfg, log) })(cmd, args)
		},
	}
	f := cmd.Flags()
	f.Var(serverList{&cfg.ServerAddr}, "server", "HOST:PORT of sigil-server's agent API (required); several replicas: repeat the flag or separate with commas, or name a headless Service whose DNS name has one address per replica")
	f.StringVar(&cfg.TrustBundle, "trust-bundle", "", "PEM roots to trust the server by on first contact (from `sigil-server bundle show`) (required)")
	f.StringVar(&cfg.TrustDomain, "trust-domain", "", "trust domain (default: read from the bundle's root)")
	f.StringVar(&cfg.JoinTokenFile, "join-token-file", "", "file holding a single-use join token (from `sigil-server token generate --output FILE`), mode 0600; \"-\" reads it from stdin. Re-read to re-attest when the agent SVID has expired or been refused")
	f.StringVar(&cfg.JoinToken, "join-token", "", "single-use join token on the command line, where every local user can read it (ps): prefer --join-token-file")
	f.StringVar(&cfg.Admin, "admin", "", "HOST:PORT serving /metrics, /ready and /live (off when empty)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the agent's SVID, key (0600) and bundle (required)")
	f.StringVar(&cfg.Socket, "socket", agent.DefaultSocket, "path of the Workload API socket")
	f.BoolVar(&cfg.Kubernetes.Enabled, "kubernetes", false, "attest the node with its projected service-account token and workloads by pod (docs/kubernetes.md)")
	f.StringVar(&cfg.Kubernetes.Kubeconfig, "kubeconfig", "", "kubeconfig file with --kubernetes (default: the pod's in-cluster service account)")
	f.StringVar(&cfg.Kubernetes.NodeName, "node-name", "", "the node this agent runs on, with --kubernetes (the DaemonSet passes spec.nodeName)")
	f.StringVar(&cfg.Kubernetes.PSATTokenFile, "k8s-psat-token-file", agent.DefaultPSATTokenFile, "projected service-account token (audience sigil-server) to attest the node with, re-read at each attestation")
	f.StringVar(&cfg.Kubernetes.ProcRoot, "proc-root", "/proc", "where the host's /proc is mounted (workloads' cgroups are read from PROC-ROOT/PID/cgroup)")
	f.DurationVar(&cfg.StatsInterval, "stats-interval", agent.DefaultStatsInterval, "report the node's golden metrics (its sidecars' request counts and latency histograms, merged) to the server this often; 1s to 1m")
	logger = logflag.Register(cmd)
	return cmd
}

func newAPI() *cobra.Command {
	api := &cobra.Command{Use: "api", Short: "Call the Workload API as a workload would"}
	fetch := &cobra.Command{Use: "fetch", Short: "Fetch SVIDs"}
	var socket string
	var timeout time.Duration
	x509Cmd := &cobra.Command{
		Use: "x509", Short: "Print this process's X.509-SVIDs: SPIFFE ID, expiry and chain", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			resp, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+socket))
			if err != nil {
				return fmt.Errorf("fetching X.509-SVID: %w", err)
			}
			printX509(cmd.OutOrStdout(), resp)
			return nil
		},
	}
	var audience []string
	jwtCmd := &cobra.Command{
		Use: "jwt", Short: "Print a JWT-SVID for an audience, and check it against the JWT bundle", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(audience) == 0 {
				return errors.New("--audience is required")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
			if err != nil {
				return err
			}
			defer client.Close()
			svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience[0], ExtraAudiences: audience[1:]})
			if err != nil {
				return fmt.Errorf("fetching JWT-SVID: %w", err)
			}
			bundles, err := client.FetchJWTBundles(ctx)
			if err != nil {
				return fmt.Errorf("fetching JWT bundle: %w", err)
			}
			if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, audience[:1]); err != nil {
				return fmt.Errorf("JWT-SVID does not validate: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "SPIFFE ID : %s\nExpires   : %s\nToken     : %s\n", svid.ID, svid.Expiry.Format(time.RFC3339), svid.Marshal())
			return nil
		},
	}
	jwtCmd.Flags().StringArrayVar(&audience, "audience", nil, "audience (repeatable)")
	for _, c := range []*cobra.Command{x509Cmd, jwtCmd} {
		c.Flags().StringVar(&socket, "socket", agent.DefaultSocket, "path of the Workload API socket")
		c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait")
	}
	fetch.AddCommand(x509Cmd, jwtCmd)
	api.AddCommand(fetch)
	return api
}

func printX509(w io.Writer, resp *workloadapi.X509Context) {
	for _, svid := range resp.SVIDs {
		leaf := svid.Certificates[0]
		fmt.Fprintf(w, "SPIFFE ID : %s\nExpires   : %s (in %s)\nChain     :\n", svid.ID, leaf.NotAfter.Format(time.RFC3339), time.Until(leaf.NotAfter).Round(time.Second))
		for i, c := range svid.Certificates {
			fmt.Fprintf(w, "  [%d] %s%s  serial %s  expires %s\n", i, subject(c), uriOf(c), c.SerialNumber.Text(16), c.NotAfter.Format(time.RFC3339))
		}
		if b, err := resp.Bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain()); err == nil {
			for _, r := range b.X509Authorities() {
				fmt.Fprintf(w, "  root: %s%s  expires %s\n", subject(r), uriOf(r), r.NotAfter.Format(time.RFC3339))
			}
		}
	}
}

func subject(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return s
	}
	return "(no subject)"
}

func uriOf(c *x509.Certificate) string {
	if len(c.URIs) == 0 {
		return ""
	}
	return "  " + c.URIs[0].String()
}

// serverList is --server: each use adds addresses to the comma-separated
// list agent.Config.ServerAddr holds, so the single form works as before.
type serverList struct{ p *string }

func (l serverList) String() string {
	if l.p == nil { // pflag's zero value, for --help
		return ""
	}
	return *l.p
}
func (l serverList) Type() string { return "HOST:PORT[,HOST:PORT...]" }
func (l serverList) Set(v string) error {
	if *l.p != "" {
		v = *l.p + "," + v
	}
	*l.p = v
	return nil
}
