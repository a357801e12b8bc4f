package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/sigil-mesh/sigil/policy"
	"github.com/sigil-mesh/sigil/policy/regotest"
	"github.com/sigil-mesh/sigil/traffic"
)

// checkPolicies compiles every Policy resource among rs as the sidecar
// will (policy.Compile on its modules, _test.rego left out) and runs its
// own tests (regotest.Run on all its modules). A policy that does not
// compile, or one of whose tests fails, is an error naming the resource
// and each failing test (package.rule and file:row); applyConfig then
// refuses the whole apply, so the policy in force stays.
func checkPolicies(ctx context.Context, rs []traffic.Resource) []error {
	var errs []error
	for _, r := range rs {
		if r.Policy == nil {
			continue
		}
		if _, err := policy.Compile(ctx, r.Policy.Spec.Enforced()); err != nil {
			errs = append(errs, fmt.Errorf("%s: does not compile: %w", r.Ref(), err))
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
		errs = append(errs, fmt.Errorf("%s: %d of its %d tests failed:\n%w", r.Ref(), len(failed), ran, errors.Join(fails...)))
	}
	return errs
}
