package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sigil-mesh/sigil/cmd/internal/termsafe"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

func newGet(client clientFunc) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:       "get virtualservices|destinationrules|policies|httproutes|grpcroutes|services|endpoints|proxies",
		Short:     "List configuration, services, endpoints or sidecars",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"virtualservices", "destinationrules", "policies", "httproutes", "grpcroutes", "services", "endpoints", "proxies"},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			w := cmd.OutOrStdout()
			switch strings.ToLower(args[0]) {
			case "proxies", "proxy":
				ps, err := c.ListProxies(ctx)
				if err != nil {
					return err
				}
				return show(w, output, ps, func(tw io.Writer) {
					fmt.Fprintln(tw, "NAMESPACE\tSERVICE\tADDRESS\tIDENTITY\tLABELS\tCONFIG\tSTATUS\tREPORTED")
					for _, p := range ps {
						st := "SYNCED"
						if p.Stale {
							st = fmt.Sprintf("STALE (current %d)", p.CurrentVersion)
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s ago\n", termsafe.Field(p.Namespace), termsafe.Field(p.Service), termsafe.Field(p.Address), termsafe.Field(p.SPIFFEID), labels(p.Labels), p.ConfigVersion, st, time.Since(p.ReportedAt).Round(time.Second))
					}
				})
			case "services", "service", "svc":
				ss, err := c.ListServices(ctx)
				if err != nil {
					return err
				}
				return show(w, output, ss, func(tw io.Writer) {
					fmt.Fprintln(tw, "NAMESPACE\tNAME\tENDPOINTS\tIDENTITIES")
					for _, s := range ss {
						fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", termsafe.Field(s.Namespace), termsafe.Field(s.Name), s.Endpoints, strings.Join(termsafe.Fields(s.Identities), ","))
					}
				})
			case "endpoints", "endpoint", "ep":
				ps, err := c.ListProxies(ctx)
				if err != nil {
					return err
				}
				return show(w, output, ps, func(tw io.Writer) {
					fmt.Fprintln(tw, "NAMESPACE\tSERVICE\tADDRESS\tIDENTITY\tLABELS")
					for _, p := range ps {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", termsafe.Field(p.Namespace), termsafe.Field(p.Service), termsafe.Field(p.Address), termsafe.Field(p.SPIFFEID), labels(p.Labels))
					}
				})
			default:
				rs, err := c.ListConfig(ctx, args[0])
				if err != nil {
					return err
				}
				return show(w, output, rs, func(tw io.Writer) {
					fmt.Fprintln(tw, "NAMESPACE\tNAME\tKIND\tVERSION\tUPDATED\tAPPLIES TO")
					for _, r := range rs {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", termsafe.Field(r.Namespace), termsafe.Field(r.Name), termsafe.Field(r.Kind), r.Version, r.UpdatedAt.Format(time.RFC3339), appliesTo(r))
					}
				})
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, json or yaml")
	return cmd
}

func labels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, termsafe.Field(k)+"="+termsafe.Field(v))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func show(w io.Writer, format string, v any, table func(io.Writer)) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "table", "":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	default:
		return fmt.Errorf("--output %q: want table, json or yaml", format)
	}
}
