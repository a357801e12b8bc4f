package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/cmd/internal/termsafe"
	"github.com/spf13/cobra"
)

// statKinds maps what `sigil stat` accepts to the kinds of adminv1.
var statKinds = map[string]string{
	"svc": adminv1.StatService, "service": adminv1.StatService, "services": adminv1.StatService,
	"subset": adminv1.StatSubset, "subsets": adminv1.StatSubset,
	"workload": adminv1.StatWorkload, "workloads": adminv1.StatWorkload,
	"route": adminv1.StatRoute, "routes": adminv1.StatRoute,
}

func newStat(client clientFunc) *cobra.Command {
	var (
		q      adminv1.StatQuery
		output string
	)
	cmd := &cobra.Command{
		Use:   "stat [svc|service|subset|workload|route] [NAME]",
		Short: "Show golden metrics (success rate, RPS, latency) from the server's window",
		Long: `Show the golden metrics the sidecars reported over the last --window:
per service, subset (canaries side by side), workload (SPIFFE ID) or
VirtualService route. Service and workload rows count what destinations'
sidecars saw; subset and route rows what callers' sidecars saw. NAME keeps
one service (a SPIFFE ID for workloads).`,
		Args:      cobra.MaximumNArgs(2),
		ValidArgs: []string{"svc", "service", "subset", "workload", "route"},
		RunE: func(cmd *cobra.Command, args []string) error {
			q.Kind = adminv1.StatService
			if len(args) > 0 {
				kind, ok := statKinds[strings.ToLower(args[0])]
				if !ok {
					return fmt.Errorf("unknown kind %q: want svc, service, subset, workload or route", args[0])
				}
				q.Kind = kind
			}
			if len(args) > 1 {
				q.Name = args[1]
			}
			if err := checkStatFlags(q.Window, output); err != nil {
				return err
			}
			c, err := client()
			if err != nil {
				return err
			}
			resp, err := c.Stats(cmd.Context(), q)
			if err != nil {
				return err
			}
			if resp.Overflow > 0 && output != "json" {
				fmt.Fprintf(cmd.ErrOrStderr(), "Warning: %d requests and connections of the window were counted in no series (a sidecar or agent held its cap of keys): the figures are short by up to that many.\n", resp.Overflow)
			}
			if len(resp.Rows) == 0 && output != "json" {
				fmt.Fprintf(cmd.ErrOrStderr(), "No traffic reported in the last %v.\n", resp.Window)
				return nil
			}
			return printStats(cmd.OutOrStdout(), output, q.Namespace == "", resp)
		},
	}
	cmd.Flags().StringVarP(&q.Namespace, "namespace", "n", "", "keep one namespace (default: all)")
	cmd.Flags().DurationVar(&q.Window, "window", time.Minute, "how far back the figures reach: a multiple of 10s up to 15m")
	cmd.Flags().StringVarP(&output, "output", "o", "", "wide (adds requests, failures, bytes) or json")
	return cmd
}

func newEdges(client clientFunc) *cobra.Command {
	var (
		q      adminv1.StatQuery
		output string
	)
	cmd := &cobra.Command{
		Use:   "edges",
		Short: "Show who talks to whom, with the identity each side proved",
		Long: `Show the traffic observed over the last --window from each caller
identity to each destination service and identity, as the destinations'
sidecars saw it (the caller's identity is the one its mTLS handshake
proved).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output == "wide" {
				return fmt.Errorf("--output %q: want json, or none for a table", output)
			}
			if err := checkStatFlags(q.Window, output); err != nil {
				return err
			}
			c, err := client()
			if err != nil {
				return err
			}
			resp, err := c.Edges(cmd.Context(), q)
			if err != nil {
				return err
			}
			return printEdges(cmd.OutOrStdout(), output, resp)
		},
	}
	cmd.Flags().StringVarP(&q.Namespace, "namespace", "n", "", "keep edges into one namespace (default: all)")
	cmd.Flags().DurationVar(&q.Window, "window", time.Minute, "how far back the figures reach: a multiple of 10s up to 15m")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json")
	return cmd
}

// checkStatFlags refuses what the server would, before asking it.
func checkStatFlags(w time.Duration, output string) error {
	if w <= 0 || w%(10*time.Second) != 0 {
		return fmt.Errorf("--window %v: want a multiple of 10s such as 30s, 1m or 15m", w)
	}
	switch output {
	case "", "wide", "json":
		return nil
	}
	return fmt.Errorf("--output %q: want wide or json, or none for a table", output)
}

func printStats(w io.Writer, output string, allNamespaces bool, resp adminv1.StatResponse) error {
	if output == "json" {
		return printJSON(w, resp)
	}
	var cols []string
	if allNamespaces {
		cols = append(cols, "NAMESPACE")
	}
	kind := adminv1.StatService
	if len(resp.Rows) > 0 {
		kind = resp.Rows[0].Kind
	}
	cols = append(cols, "NAME")
	switch kind {
	case adminv1.StatSubset:
		cols = append(cols, "SUBSET")
	case adminv1.StatRoute:
		cols = append(cols, "ROUTE")
	}
	cols = append(cols, "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN")
	if output == "wide" {
		cols = append(cols, "REQUESTS", "FAILURES", "BYTES_SENT", "BYTES_RECEIVED")
	}
	// A dry-run policy's would-be denials: always in wide, and in the
	// table while a row has some (the column is news, not noise).
	dryRun := output == "wide"
	for _, r := range resp.Rows {
		dryRun = dryRun || r.Golden.DryRunDenied > 0
	}
	if dryRun {
		cols = append(cols, "DRYRUN_DENIED")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for _, r := range resp.Rows {
		var f []string
		if allNamespaces {
			f = append(f, orDash(termsafe.Field(r.Namespace))) // "": a host outside the mesh
		}
		f = append(f, termsafe.Field(r.Name))
		switch kind {
		case adminv1.StatSubset:
			f = append(f, orDash(termsafe.Field(r.Subset)))
		case adminv1.StatRoute:
			f = append(f, orDash(termsafe.Field(r.Route)))
		}
		f = append(f, fmt.Sprint(r.Meshed))
		f = append(f, golden(r.Golden, output == "wide")...)
		if dryRun {
			f = append(f, fmt.Sprint(r.Golden.DryRunDenied))
		}
		fmt.Fprintln(tw, strings.Join(f, "\t"))
	}
	return tw.Flush()
}

func printEdges(w io.Writer, output string, resp adminv1.EdgesResponse) error {
	if output == "json" {
		return printJSON(w, resp)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SRC\tDST_SERVICE\tDST\tSUCCESS\tRPS\tLATENCY_P99")
	for _, e := range resp.Edges {
		g := golden(e.Golden, false)
		fmt.Fprintf(tw, "%s\t%s.%s\t%s\t%s\t%s\t%s\n", orDash(termsafe.Field(e.Source)), termsafe.Field(e.DestinationService), orDash(termsafe.Field(e.DestinationNamespace)),
			termsafe.Field(e.Destination), g[0], g[1], g[4])
	}
	return tw.Flush()
}

// golden returns a row's figures as the table shows them: SUCCESS, RPS,
// the three latencies, TCP_CONN, and with wide the counts.
func golden(g adminv1.Golden, wide bool) []string {
	success := "-"
	if g.SuccessRate != nil {
		success = fmt.Sprintf("%.2f%%", *g.SuccessRate*100)
	}
	f := []string{success, fmt.Sprintf("%.1frps", g.RPS), millis(g.P50), millis(g.P95), millis(g.P99), fmt.Sprint(g.TCPConnections)}
	if wide {
		f = append(f, fmt.Sprint(g.Requests), fmt.Sprint(g.Failures), fmt.Sprint(g.BytesSent), fmt.Sprint(g.BytesReceived))
	}
	return f
}

// millis shows a latency in milliseconds with three significant digits
// at most (a bucket is 15 % wide: more digits would claim precision the
// histogram does not have).
func millis(ms *float64) string {
	switch {
	case ms == nil:
		return "-"
	case *ms < 10:
		return fmt.Sprintf("%.2fms", *ms)
	case *ms < 100:
		return fmt.Sprintf("%.1fms", *ms)
	default:
		return fmt.Sprintf("%.0fms", *ms)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
