package main

import (
	"context"
	"fmt"
	"os"

	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/policy"
	"github.com/spf13/cobra"
)

// newAudit is `sigil audit verify FILE...`: checks the hash chain of
// exported audit trails, offline.
func newAudit() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Audit trails"}
	cmd.AddCommand(&cobra.Command{
		Use:   "verify FILE...",
		Short: "Check that audit trails are whole: no line edited, removed or reordered",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bad := 0
			for _, path := range args {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				sum, err := audit.Check(f)
				last := sum.Last
				f.Close()
				if err != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: BROKEN: %v\n", path, err)
					bad++
					continue
				}
				if last.Seq == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: ok, empty\n", path)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok, %d events, last %s at %s; actions: %d committed, %d aborted, %d pending\n", path, last.Seq, last.Type,
					last.Time.Format("2006-01-02T15:04:05Z07:00"), sum.Committed, sum.Aborted, len(sum.Pending))
				// Pending: written before a store change whose outcome is
				// not recorded yet (the server is running, or stopped and
				// settles them when it starts).
				for _, e := range sum.Aborts {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: aborted: intent seq %s (%s records): %s\n", path, e.Details[audit.DetailIntentSeq], e.Details[audit.DetailIntentCount], e.Details[audit.DetailReason])
				}
				for _, e := range sum.Pending {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: pending: seq %d %s %s\n", path, e.Seq, e.Type, e.Subject)
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d trails failed verification", bad, len(args))
			}
			return nil
		},
	})
	return cmd
}

// newPolicy is `sigil policy check DIR|FILE`: compiles a policy exactly as
// the sidecar would, without running anything.
func newPolicy() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Authorization policies"}
	cmd.AddCommand(&cobra.Command{
		Use:   "test DIR...",
		Short: "Run the policy's Rego tests (test_ rules in _test.rego files), as `opa test` does",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			results, err := tester.Run(cmd.Context(), args...)
			if err != nil {
				return fmt.Errorf("policy test: %w", err)
			}
			failed := 0
			for _, r := range results {
				status := "PASS"
				switch {
				case r.Error != nil:
					status, failed = "ERROR: "+r.Error.Error(), failed+1
				case r.Fail:
					status, failed = "FAIL", failed+1
				case r.Skip:
					status = "SKIP"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s.%s: %s (%s)\n", r.Package, r.Name, status, r.Duration)
			}
			if len(results) == 0 {
				return fmt.Errorf("no tests in %v", args)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d/%d passed\n", len(results)-failed, len(results))
			if failed > 0 {
				return fmt.Errorf("%d policy tests failed", failed)
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "check DIR|FILE",
		Short: "Compile a policy as the sidecar does (package sigil.authz, Rego v1) and report errors",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcs, err := policy.ReadSources(args[0])
			if err != nil {
				return err
			}
			if _, err := policy.Compile(context.Background(), srcs); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%d files)\n", args[0], len(srcs))
			return nil
		},
	})
	cmd.AddCommand(newPolicyDiff())
	return cmd
}
