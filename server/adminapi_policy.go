package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sigil-mesh/sigil/policy"
	"github.com/sigil-mesh/sigil/policy/regotest"
	"github.com/sigil-mesh/sigil/traffic"
)

// PolicyTestBudget bounds the time the tests of all the Policy resources
// of one apply take together: regotest.Timeout bounds each test, and a
// policy may hold many.
const PolicyTestBudget = 30 * time.Second

// checkPolicies compiles every Policy resource among rs as the sidecar
// will and checks it as `sigil policy check` does (policy.Check on its
// modules, _test.rego beside them: a reference outside the input
// document, such as input.request.methd, is an error), then runs its own
// tests (regotest.Run on all its modules). A policy that does not
// compile, with a check error, or one of whose tests fails, is an error
// naming the resource and each finding (file:row:col) or failing test
// (package.rule and file:row); applyConfig then refuses the whole apply,
// so the policy in force stays. Warnings (unused rules) do not refuse.
// All the tests of one apply together run at most PolicyTestBudget (each
// at most regotest.Timeout): a test cut off fails, naming the bound.
func checkPolicies(ctx context.Context, rs []traffic.Resource) []error {
	ctx, cancel := context.WithTimeout(ctx, PolicyTestBudget)
	defer cancel()
	var errs []error
	for _, r := range rs {
		if r.Policy == nil {
			continue
		}
		findings, err := policy.Check(ctx, r.Policy.Spec.Enforced(), r.Policy.Spec.Tests())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: does not compile: %w", r.Ref(), err))
			continue
		}
		var bad []error
		for _, f := range findings {
			if f.Severity == policy.SeverityError {
				bad = append(bad, errors.New("  "+f.String()))
			}
		}
		if len(bad) > 0 {
			errs = append(errs, fmt.Errorf("%s: fails sigil policy check:\n%w", r.Ref(), errors.Join(bad...)))
			continue
		}
		ran, failed, err := regotest.Run(ctx, r.Policy.Spec.All())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: tests: %w", r.Ref(), err))
			continue
		}
		if len(failed) == 0 {
			continue
		}
		fails := make([]error, len(failed))
		for i, f := range failed {
			fails[i] = errors.New("  " + f.String())
		}
		if ctx.Err() != nil {
			fails = append(fails, fmt.Errorf("  (the tests of one apply may take %s together; they were cut off)", PolicyTestBudget))
		}
		errs = append(errs, fmt.Errorf("%s: %d of its %d tests failed:\n%w", r.Ref(), len(failed), ran, errors.Join(fails...)))
	}
	return errs
}
