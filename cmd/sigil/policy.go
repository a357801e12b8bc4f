package main

import (
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/sigil-mesh/sigil/policy"
	"github.com/spf13/cobra"
)

// newPolicy is `sigil policy`: authorization policies as code, offline
// (nothing here talks to a server).
func newPolicy() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Authorization policies as code: check and test before they ship"}
	cmd.AddCommand(newPolicyTest())
	cmd.AddCommand(newPolicyCheck())
	cmd.AddCommand(newPolicyDiff())
	return cmd
}

// newPolicyTest is `sigil policy test DIR...`: the policy's own Rego tests.
func newPolicyTest() *cobra.Command {
	return &cobra.Command{
		Use:   "test DIR...",
		Short: "Run the policy's Rego tests (test_ rules in _test.rego files), as `opa test` does",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			results, err := runPolicyTests(cmd.Context(), args)
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
	}
}

// newPolicyCheck is `sigil policy check DIR|FILE`: the policy compiled as
// the sidecar does, then checked against Sigil's input document, OPA's
// strict mode and lint (policy.Check).
func newPolicyCheck() *cobra.Command {
	var failOnWarn bool
	cmd := &cobra.Command{
		Use:   "check DIR|FILE",
		Short: "Compile a policy as the sidecar does, check its input references against Sigil's input document (docs/policy-input.md), OPA's strict mode and lint",
		Long: `Compiles the policy exactly as a sidecar loads it (package sigil.authz,
Rego v1), then reports, each as file:line:column:
  errors    a reference to a field of input that Sigil's input document
            (docs/policy-input.md) does not have, with the nearest valid
            field; a reference under data that no rule defines; OPA's
            strict-mode errors (unused variables and imports,
            deprecated built-ins...), the _test.rego files included;
  warnings  rules data.sigil.authz.allow never uses; rule bodies that can
            never be true (input.request.method == "get", a protocol that
            does not exist, two different values for one field...).
The exit status is non-zero on any error, and on any warning with
--fail-on-warn.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcs, err := policy.ReadSources(args[0])
			if err != nil {
				return err
			}
			tests, err := policy.ReadTests(args[0])
			if err != nil {
				return err
			}
			findings, err := policy.Check(cmd.Context(), srcs, tests)
			if err != nil {
				return err
			}
			errs, warns := 0, 0
			for _, f := range findings {
				fmt.Fprintln(cmd.OutOrStdout(), f)
				if f.Severity == policy.SeverityWarning {
					warns++
				} else {
					errs++
				}
			}
			switch {
			case errs > 0:
				return fmt.Errorf("%s: %d errors, %d warnings", args[0], errs, warns)
			case warns > 0 && failOnWarn:
				return fmt.Errorf("%s: %d warnings (--fail-on-warn)", args[0], warns)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%d files, %d test files, %d warnings)\n", args[0], len(srcs), len(tests), warns)
			return nil
		},
	}
	cmd.Flags().BoolVar(&failOnWarn, "fail-on-warn", false, "exit non-zero on warnings too (unused rules, rules that can never be true), as conftest's --fail-on-warn")
	return cmd
}

// runPolicyTests runs the tests under paths as `opa test` does, but with
// the built-ins a Sigil policy may use (policy.Capabilities), so a test
// passes here only if the server would run it too when the policy is
// applied as a Policy resource.
func runPolicyTests(ctx context.Context, paths []string) ([]*tester.Result, error) {
	modules, store, err := tester.LoadWithRegoVersion(paths, nil, ast.RegoV1)
	if err != nil {
		return nil, err
	}
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer store.Abort(ctx, txn)
	compiler := ast.NewCompiler().WithCapabilities(policy.Capabilities())
	ch, err := tester.NewRunner().SetCompiler(compiler).SetStore(store).SetModules(modules).RunTests(ctx, txn)
	if err != nil {
		return nil, err
	}
	var out []*tester.Result
	for r := range ch {
		out = append(out, r)
	}
	return out, nil
}
