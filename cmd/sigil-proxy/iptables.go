package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sigil-mesh/sigil/proxy/capture"
	"github.com/spf13/cobra"
)

func newIptables() *cobra.Command {
	cfg := capture.IptablesConfig{ProxyUID: -1}
	var dryRun, remove bool
	cmd := &cobra.Command{
		Use:   "iptables",
		Short: "Redirect this network namespace's outbound TCP to the sidecar (like Istio's init container)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rules := capture.RemoveRules()
			if !remove {
				if cfg.ProxyUID < 0 {
					return errors.New("--proxy-uid is required: the sidecar's own traffic must not be redirected")
				}
				var err error
				if rules, err = cfg.Rules(); err != nil {
					return err
				}
			}
			if dryRun {
				for _, r := range rules {
					fmt.Fprintln(cmd.OutOrStdout(), "iptables "+strings.Join(r, " "))
				}
				return nil
			}
			return capture.ApplyRules(cmd.Context(), rules)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.ProxyUID, "proxy-uid", -1, "uid sigil-proxy runs as; its connections are not redirected (required)")
	f.IntVar(&cfg.OutboundPort, "outbound-port", 15001, "the sidecar's outbound port")
	f.IntSliceVar(&cfg.ExcludePorts, "exclude-port", nil, "destination ports not to redirect (repeatable)")
	f.BoolVar(&dryRun, "dry-run", false, "print the iptables commands instead of running them")
	f.BoolVar(&remove, "remove", false, "remove the rules")
	return cmd
}
