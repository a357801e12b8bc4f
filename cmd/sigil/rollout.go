package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sigil-mesh/sigil/rollout"
	"github.com/spf13/cobra"
)

func newRollout(client clientFunc) *cobra.Command {
	cfg := rollout.Config{}
	cmd := &cobra.Command{
		Use:   "rollout SERVICE --to SUBSET",
		Short: "Shift a service's traffic to a subset step by step, judged by its golden metrics; roll back at the first breach",
		Long: `Shift the weights of the service's VirtualService route from one subset
(--from, or the route's other subset) to --to at each of --steps, each step
an ordinary apply (audited, visible in sigil get). After each step it waits
--interval and reads the subsets' figures from the server (as sigil stat
shows them): --to's success rate must be at least --min-success-rate and
at most --max-success-rate-drop points below --from's, and its p99 latency
at most --max-p99. At the first breach, or with fewer than --min-requests
requests to judge after three intervals, or on Ctrl-C, every request goes
back to --from and the command says why and exits 1. Only figures
reported --report-delay after a step began are judged, so each step is
judged on its own traffic.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Service = args[0]
			if err := cfg.Validate(); err != nil {
				return err
			}
			c, err := client()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return rollout.New(cfg, c, c, cmd.OutOrStdout()).Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfg.Namespace, "namespace", "n", "default", "the service's namespace")
	f.StringVar(&cfg.To, "to", "", "the subset traffic moves to (required)")
	f.StringVar(&cfg.From, "from", "", "the subset traffic leaves (default: the route's other subset)")
	f.IntSliceVar(&cfg.Steps, "steps", []int{10, 25, 50, 100}, "per cent of requests --to gets at each step, rising to 100")
	f.DurationVar(&cfg.Interval, "interval", 30*time.Second, "wait after each step before judging it (at least 10s, the figures' resolution)")
	f.Float64Var(&cfg.MinSuccessRate, "min-success-rate", 99, "least success rate of --to, in per cent")
	f.Float64Var(&cfg.MaxSuccessRateDrop, "max-success-rate-drop", 1, "most points --to's success rate may be below --from's")
	f.DurationVar(&cfg.MaxP99, "max-p99", 500*time.Millisecond, "largest p99 latency of --to (0: not judged)")
	f.IntVar(&cfg.MinRequests, "min-requests", rollout.DefaultMinRequests, "least requests to --to a step is judged on")
	f.DurationVar(&cfg.ReportDelay, "report-delay", rollout.DefaultReportDelay, "how long requests take to reach the server's figures (the sidecars' plus the agents' --stats-interval); a step is judged on reports sent this long after it began")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}
