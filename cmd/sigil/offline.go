package main

import (
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/tester"
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
		Long: `Checks the CA's local trail files (one hash chain each) and exported audit
stream files (the file exporter's JSON lines, or OPA decision-log upload
batches, gzip'd or not) from any number of writers: each writer's records
are ordered by seq, every hash and link is checked, recorded gaps and
duplicates are counted, and the first broken link of each writer is named
with its file and line. Exits non-zero when anything is broken.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return verifyAuditFiles(cmd.OutOrStdout(), args)
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
	return cmd
}
