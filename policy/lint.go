package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Lint: what compiles and reads only real fields, yet cannot be meant.
// Warnings, from the compiled modules of the policy files (tests are not
// linted):
//   - a rule that data.sigil.authz.allow never uses, directly or through
//     other rules (OPA's rule dependency graph): dead code, or a rule the
//     author thinks is in force and is not;
//   - a rule body that can never be true, so the rule never applies: a
//     constant false expression, a comparison of constants that fails, an
//     input field compared with a value it never holds (a lower-case
//     method, a protocol or TLS version outside the schema's values), or
//     one input field required equal to two different constants.

// allowRef is the rule every decision asks for.
var allowRef = ast.MustParseRef(Query)

// lint returns the warnings for the modules of c that come from srcs.
func lint(c *ast.Compiler, srcs map[string]string) []Finding {
	var out []Finding
	out = append(out, unusedRules(c, srcs)...)
	for _, name := range sortedKeys(srcs) {
		ast.WalkRules(c.Modules[name], func(r *ast.Rule) bool {
			if at, msg := neverTrue(r.Body); msg != "" {
				out = append(out, findingAt(at, SeverityWarning, KindNeverTrue,
					fmt.Sprintf("%s can never be true: %s", ruleName(c.Modules[name], r), msg)))
			}
			return false
		})
	}
	return out
}

// unusedRules returns a warning for each rule of srcs' modules that allow
// does not depend on.
func unusedRules(c *ast.Compiler, srcs map[string]string) []Finding {
	used := map[*ast.Rule]bool{}
	var visit func(r *ast.Rule)
	visit = func(r *ast.Rule) {
		if used[r] {
			return
		}
		used[r] = true
		for dep := range c.Graph.Dependencies(r) {
			if d, ok := dep.(*ast.Rule); ok {
				visit(d)
			}
		}
	}
	for _, r := range c.GetRulesExact(allowRef) {
		for ; r != nil; r = r.Else {
			visit(r)
		}
	}
	var out []Finding
	for _, name := range sortedKeys(srcs) {
		m := c.Modules[name]
		reported := map[string]bool{}
		for _, r := range m.Rules {
			if used[r] {
				continue
			}
			rn := ruleName(m, r)
			if reported[rn] {
				continue
			}
			reported[rn] = true
			out = append(out, findingAt(r.Location, SeverityWarning, KindUnused,
				fmt.Sprintf("%s is never used: %s does not depend on it", rn, Query)))
		}
	}
	return out
}

// ruleName is the full name of r (data.pkg.rule).
func ruleName(m *ast.Module, r *ast.Rule) string {
	return m.Package.Path.Extend(r.Head.Ref().GroundPrefix()).String()
}

// Comparison operators, as the compiler names them.
var comparisons = map[string]func(c int) bool{
	ast.Equality.Name:      func(c int) bool { return c == 0 }, // =
	ast.Equal.Name:         func(c int) bool { return c == 0 },
	ast.NotEqual.Name:      func(c int) bool { return c != 0 },
	ast.LessThan.Name:      func(c int) bool { return c < 0 },
	ast.LessThanEq.Name:    func(c int) bool { return c <= 0 },
	ast.GreaterThan.Name:   func(c int) bool { return c > 0 },
	ast.GreaterThanEq.Name: func(c int) bool { return c >= 0 },
}

// neverTrue returns why body can never be true and where, or "". Only the
// body's own expressions count (not those under not, in comprehensions or
// in every), and only when they are not negated.
func neverTrue(body ast.Body) (*ast.Location, string) {
	// input field → the constant an equality in this body requires.
	required := map[string]*ast.Term{}
	// local variable → the input field it was bound to (x := input.a.b,
	// and the locals the compiler makes for `in`).
	alias := map[ast.Var]*ast.Term{}
	resolve := func(t *ast.Term) *ast.Term {
		if v, ok := t.Value.(ast.Var); ok && alias[v] != nil {
			return alias[v]
		}
		return t
	}
	for _, e := range body {
		if e.Negated || len(e.With) > 0 {
			continue
		}
		if t, ok := e.Terms.(*ast.Term); ok {
			if b, ok := t.Value.(ast.Boolean); ok && !bool(b) {
				return e.Location, "it has the expression false"
			}
			continue
		}
		if !e.IsCall() || len(e.Operands()) != 2 {
			continue
		}
		op := e.Operator().String()
		if op == ast.Member.Name {
			if why := neverMember(resolve(e.Operand(0)), e.Operand(1)); why != "" {
				return e.Location, why
			}
			continue
		}
		holds := comparisons[op]
		if holds == nil {
			continue
		}
		a, b := resolve(e.Operand(0)), resolve(e.Operand(1))
		if op == ast.Equality.Name || op == ast.Assign.Name {
			if v, ok := a.Value.(ast.Var); ok && isInputField(b) {
				alias[v] = b
				continue
			}
		}
		if ast.IsConstant(a.Value) && ast.IsConstant(b.Value) {
			if !holds(ast.Compare(a.Value, b.Value)) {
				return e.Location, fmt.Sprintf("%s is always false", exprText(e))
			}
			continue
		}
		if op != ast.Equal.Name && op != ast.Equality.Name {
			continue
		}
		field, lit := inputAndConstant(a, b)
		if field == nil {
			continue
		}
		if why := neverHolds(field, lit); why != "" {
			return e.Location, why
		}
		key := field.String()
		if prev, ok := required[key]; ok && !prev.Equal(lit) {
			return e.Location, fmt.Sprintf("%s must equal both %s and %s", key, prev, lit)
		}
		required[key] = lit
	}
	return nil, ""
}

// exprText is e as written in its module, or as OPA prints it.
func exprText(e *ast.Expr) string {
	if e.Location != nil && len(e.Location.Text) > 0 {
		return string(e.Location.Text)
	}
	return e.String()
}

// neverMember returns why `x in coll` never holds when x is an input field
// and coll a constant set or array of values it never holds (method in
// {"get", "post"}), or "".
func neverMember(x, coll *ast.Term) string {
	if !isInputField(x) || !ast.IsConstant(coll.Value) {
		return ""
	}
	ref := x.Value.(ast.Ref)
	var elems []*ast.Term
	switch c := coll.Value.(type) {
	case ast.Set:
		elems = c.Slice()
	case *ast.Array:
		c.Foreach(func(t *ast.Term) { elems = append(elems, t) })
	default:
		return ""
	}
	if len(elems) == 0 {
		return fmt.Sprintf("%s is in an empty collection", ref)
	}
	var whys []string
	for _, el := range elems {
		why := neverHolds(ref, el)
		if why == "" {
			return ""
		}
		whys = append(whys, why)
	}
	return fmt.Sprintf("%s is in %s, which holds no value it can have: %s", ref, coll, strings.Join(whys, "; "))
}

// inputAndConstant returns the input reference and the constant of an
// equality between them, in either order; nil when it is not one.
func inputAndConstant(a, b *ast.Term) (ast.Ref, *ast.Term) {
	if !ast.IsConstant(a.Value) {
		a, b = b, a
	}
	if !ast.IsConstant(a.Value) || !isInputField(b) {
		return nil, nil
	}
	return b.Value.(ast.Ref), a
}

// isInputField reports whether t is a reference to a field of input by
// constant keys (input.request.method).
func isInputField(t *ast.Term) bool {
	ref, ok := t.Value.(ast.Ref)
	return ok && len(ref) >= 2 && ref[0].Equal(ast.InputRootDocument) && ref.IsGround()
}

// neverHolds returns why field never equals lit according to the schema,
// or "".
func neverHolds(field ast.Ref, lit *ast.Term) string {
	n := schemaTree
	for _, t := range field[1:] {
		s, ok := t.Value.(ast.String)
		if !ok || n.fields == nil {
			return ""
		}
		if n = n.fields[string(s)]; n == nil {
			return ""
		}
	}
	if n.field == nil || !n.leaf() {
		return ""
	}
	s, isString := lit.Value.(ast.String)
	switch {
	case n.field.Type == TypeString && !isString:
		return fmt.Sprintf("%s is a string, never %s", field, lit)
	case n.field.Type == TypeNumber && !isNumber(lit.Value):
		return fmt.Sprintf("%s is a number, never %s", field, lit)
	case n.field.Upper && string(s) != strings.ToUpper(string(s)):
		return fmt.Sprintf("%s is upper-case, never %s (did you mean %q?)", field, lit, strings.ToUpper(string(s)))
	case len(n.field.Values) > 0 && isString && !slices.Contains(n.field.Values, string(s)):
		return fmt.Sprintf("%s is one of %s, never %s", field, strings.Join(n.field.Values, ", "), lit)
	}
	return ""
}

func isNumber(v ast.Value) bool {
	_, ok := v.(ast.Number)
	return ok
}
