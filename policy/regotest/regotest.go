// Package regotest runs a policy's own Rego tests (test_ rules, as `opa
// test` does) from modules held in memory: what the server runs on a
// Policy resource before it accepts it. It is apart from package policy so
// the sidecar, which never runs tests, does not link OPA's tester.
package regotest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/sigil-mesh/sigil/policy"
)

// Timeout bounds one test's evaluation, so a test that never ends cannot
// hold an apply.
const Timeout = 5 * time.Second

// Failure is one test that failed or could not run.
type Failure struct {
	// Name is package.rule without "data.", as `opa test` prints it
	// ("sigil.authz_test.test_get_allowed").
	Name string
	// Location is file:row of the test rule ("authz_test.rego:12").
	Location string
	// Err is the evaluation error; nil for a test that ran and was false.
	Err error
}

func (f Failure) String() string {
	if f.Err != nil {
		return fmt.Sprintf("%s (%s): error: %v", f.Name, f.Location, f.Err)
	}
	return fmt.Sprintf("%s (%s): FAIL", f.Name, f.Location)
}

// Run parses modules (file name → Rego v1) and runs every test rule in
// them against all of them. It returns how many tests ran and those that
// failed, sorted by name; an error means the modules could not be parsed
// or compiled together.
func Run(ctx context.Context, modules map[string]string) (int, []Failure, error) {
	parsed := make(map[string]*ast.Module, len(modules))
	for name, src := range modules {
		m, err := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return 0, nil, fmt.Errorf("regotest: %w", err)
		}
		parsed[name] = m
	}
	store := inmem.New()
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("regotest: %w", err)
	}
	defer store.Abort(ctx, txn)
	compiler := ast.NewCompiler().WithCapabilities(policy.Capabilities())
	ch, err := tester.NewRunner().SetCompiler(compiler).SetStore(store).SetTimeout(Timeout).RaiseBuiltinErrors(true).
		SetDefaultRegoVersion(ast.RegoV1).SetModules(parsed).RunTests(ctx, txn)
	if err != nil {
		return 0, nil, fmt.Errorf("regotest: %w", err)
	}
	ran := 0
	var failed []Failure
	for r := range ch {
		if r.Skip {
			continue
		}
		ran++
		if r.Error == nil && !r.Fail {
			continue
		}
		f := Failure{Name: strings.TrimPrefix(r.Package, "data.") + "." + r.Name, Err: r.Error}
		if r.Location != nil {
			f.Location = fmt.Sprintf("%s:%d", r.Location.File, r.Location.Row)
		}
		failed = append(failed, f)
	}
	sort.Slice(failed, func(i, j int) bool { return failed[i].Name < failed[j].Name })
	return ran, failed, nil
}
