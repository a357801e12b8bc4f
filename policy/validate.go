package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// validate refuses a policy that compiles but cannot work, so that
// `sigil policy check` reports it and a sidecar never swaps it in:
//   - no rule named allow in package sigil.authz: every request would be
//     denied;
//   - allow defined as anything but a complete rule (a set with
//     "contains", a function, a rule under allow.x) or with a constant
//     that is not a boolean: allow could never be true;
//   - rules that conflict whatever the input (allow := true in one file,
//     allow := false in another): every evaluation would fail with OPA's
//     eval_conflict_error, and so deny. Found by evaluating the prepared
//     query once with an empty input; conflicts that need a particular
//     input still deny at run time, as every policy error does.
func validate(ctx context.Context, q rego.PreparedEvalQuery, mods []*ast.Module) error {
	var errs []error
	found := false
	for _, m := range mods {
		if m.Package.Path.String() != "data.sigil.authz" {
			continue
		}
		for _, r := range m.Rules {
			ref := r.Head.Ref()
			if len(ref) == 0 || !ref[0].Equal(ast.VarTerm("allow")) {
				continue
			}
			where := fmt.Sprintf("%s:%d", r.Location.File, r.Location.Row)
			switch {
			case len(ref) > 1:
				errs = append(errs, fmt.Errorf("policy: %s: %s defines part of an object; allow must be a boolean rule (allow if { ... })", where, ref))
			case len(r.Head.Args) > 0:
				errs = append(errs, fmt.Errorf("policy: %s: allow is a function; it must be a boolean rule (allow if { ... })", where))
			case r.Head.RuleKind() == ast.MultiValue:
				errs = append(errs, fmt.Errorf("policy: %s: allow contains ... makes a set; allow must be a boolean rule (allow if { ... })", where))
			case r.Head.Value != nil && ast.IsConstant(r.Head.Value.Value) && !isBoolean(r.Head.Value.Value):
				errs = append(errs, fmt.Errorf("policy: %s: allow is %s, not a boolean: only true allows", where, r.Head.Value))
			default:
				found = true
			}
		}
	}
	if !found && len(errs) == 0 {
		errs = append(errs, errors.New("policy: package sigil.authz has no rule named allow: every request would be denied (write allow if { ... }, or default allow := false to deny on purpose)"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("policy: %w", errors.Join(errs...))
	}
	_, err := q.Eval(ctx, rego.EvalParsedInput(ast.NewObject()))
	var te *topdown.Error
	if errors.As(err, &te) && te.Code == topdown.ConflictErr {
		loc := ""
		if te.Location != nil {
			loc = te.Location.String() + ": "
		}
		return fmt.Errorf("policy: %srules conflict whatever the input, so every decision would fail (and deny): %s", loc, strings.TrimSpace(te.Message))
	}
	return nil
}

func isBoolean(v ast.Value) bool {
	_, ok := v.(ast.Boolean)
	return ok
}
