package policy

import (
	"cmp"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// `sigil policy check`: a policy is checked as code before it ships. Check
// compiles it exactly as the sidecar does (Compile), then looks for what
// compiles but cannot be meant:
//   - a reference to a field of input that Sigil's input document does not
//     have (input.request.methd): it is undefined on every request, so the
//     rule reading it silently never matches. An error, with the nearest
//     valid field; so is a reference under data that no rule defines
//     (Sigil loads no data documents, only modules);
//   - OPA's strict-mode errors (unused local variables and imports,
//     deprecated built-ins, ...). Errors. The sidecar's load does not apply
//     strict mode: a policy that works keeps loading, and the check is the
//     gate a repository puts in front of it;
//   - lint (lint.go): rules allow never uses, and rule bodies that can never
//     be true. Warnings.

// SchemaDoc is where the input document is published; messages point to it.
const SchemaDoc = "docs/policy-input.md"

// Severity says whether a finding fails the check.
type Severity int

// Severities.
const (
	// SeverityError fails the check.
	SeverityError Severity = iota
	// SeverityWarning fails it only when the caller asks (sigil policy
	// check --fail-on-warn).
	SeverityWarning
)

// Kinds of findings.
const (
	KindInput     = "input"       // a reference outside the input document
	KindData      = "data"        // a reference to data no rule defines
	KindStrict    = "strict"      // OPA's strict-mode compiler checks
	KindUnused    = "unused-rule" // a rule allow never uses
	KindNeverTrue = "never-true"  // a rule body that can never be true
)

// Finding is one problem Check found, at a place in a module.
type Finding struct {
	File     string
	Row, Col int // 1-based
	Severity Severity
	Kind     string // one of the Kind constants
	Message  string
}

// String is the finding as `file:row:col: message`, with "warning: "
// before the message of a warning.
func (f Finding) String() string {
	sev := ""
	if f.Severity == SeverityWarning {
		sev = "warning: "
	}
	return fmt.Sprintf("%s:%d:%d: %s%s", f.File, f.Row, f.Col, sev, f.Message)
}

func findingAt(loc *ast.Location, sev Severity, kind, msg string) Finding {
	f := Finding{Severity: sev, Kind: kind, Message: msg}
	if loc != nil {
		f.File, f.Row, f.Col = loc.File, loc.Row, loc.Col
	}
	return f
}

// ReadTests returns the _test.rego files at path (a directory; none for a
// single file), which the sidecar never loads but Check compiles with the
// policy so that its tests are held to strict mode too.
func ReadTests(path string) (map[string]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	tests := map[string]string{}
	if !st.IsDir() {
		return tests, nil
	}
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, "_test.rego") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		tests[p] = string(b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return tests, nil
}

// Check compiles srcs (file name → Rego, what the sidecar loads) as the
// sidecar does, with tests (the _test.rego files, which may be empty)
// beside them, and returns what it finds, ordered by file and position.
// An error means the policy does not compile (or is refused by Compile, or
// its tests do not compile); the findings are about policies that do.
func Check(ctx context.Context, srcs, tests map[string]string) ([]Finding, error) {
	if _, err := Compile(ctx, srcs); err != nil {
		return nil, err
	}
	parsed := make(map[string]*ast.Module, len(srcs)+len(tests))
	for _, set := range []map[string]string{srcs, tests} {
		for name, src := range set {
			if _, dup := parsed[name]; dup {
				return nil, fmt.Errorf("policy: %s is both a policy and a test file", name)
			}
			m, err := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				return nil, fmt.Errorf("policy: %w", err)
			}
			parsed[name] = m
		}
	}
	// The compiled modules: imports resolved, so `import input.request`
	// then `request.methd` is seen as input.request.methd.
	c := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	c.Compile(parsed)
	if c.Failed() {
		return nil, fmt.Errorf("policy: %w", c.Errors)
	}
	var out []Finding
	for _, name := range sortedKeys(c.Modules) {
		out = append(out, checkRefs(c.RuleTree, c.Modules[name])...)
		// The compiler resolves imports into the refs that use them and
		// drops them: the imports themselves are read where parsed.
		for _, imp := range parsed[name].Imports {
			if ref, ok := imp.Path.Value.(ast.Ref); ok {
				if msg := checkInputRef(ref); msg != "" {
					out = append(out, findingAt(imp.Path.Location, SeverityError, KindInput, msg))
				}
			}
		}
	}
	out = append(out, typeFindings(parsed, out)...)
	out = append(out, strictFindings(parsed)...)
	out = append(out, lint(c, srcs)...)
	return sortFindings(out), nil
}

// strictFindings compiles the modules again in OPA's strict mode and
// returns its errors (the ones the plain compile above did not have: it
// succeeded).
func strictFindings(parsed map[string]*ast.Module) []Finding {
	c := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1).WithStrict(true)
	c.Compile(parsed)
	var out []Finding
	for _, e := range c.Errors {
		out = append(out, findingAt(e.Location, SeverityError, KindStrict, e.Message+" (OPA strict mode)"))
	}
	return out
}

func sortFindings(fs []Finding) []Finding {
	slices.SortFunc(fs, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Row, b.Row), cmp.Compare(a.Col, b.Col), strings.Compare(a.Message, b.Message))
	})
	return slices.Compact(fs)
}

// checkRefs returns a finding for every reference in m to a field of input
// the input document does not have, or to a document under data no rule
// defines (Sigil loads no data documents, only modules: both are
// undefined on every request). The target of a `with` (a test giving the
// policy an input or a rule a value) is not an error: it is a warning
// when it names what the sidecar never has.
func checkRefs(rules *ast.TreeNode, m *ast.Module) []Finding {
	var out []Finding
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		switch x := x.(type) {
		case *ast.With:
			if ref, ok := x.Target.Value.(ast.Ref); ok {
				if kind, msg := checkRef(rules, ref); msg != "" {
					out = append(out, findingAt(x.Target.Location, SeverityWarning, kind,
						"with sets what the sidecar never has: "+msg))
				}
			}
			vis.Walk(x.Value)
			return true
		case ast.Ref:
			if kind, msg := checkRef(rules, x); msg != "" {
				out = append(out, findingAt(x[0].Location, SeverityError, kind, msg))
			}
		}
		return false
	})
	vis.Walk(m)
	return out
}

// checkRef returns the kind of finding and why ref is undefined on every
// request, or "" when it may be defined.
func checkRef(rules *ast.TreeNode, ref ast.Ref) (string, string) {
	if len(ref) == 0 {
		return "", ""
	}
	switch {
	case ref[0].Equal(ast.InputRootDocument):
		return KindInput, checkInputRef(ref)
	case ref[0].Equal(ast.DefaultRootDocument):
		return KindData, checkDataRef(rules, ref)
	}
	return "", ""
}

// checkDataRef returns why ref, under data, reaches no rule, or "".
func checkDataRef(rules *ast.TreeNode, ref ast.Ref) string {
	n := rules
	for i, t := range ref {
		if len(n.Values) > 0 || i > 0 && !t.IsGround() {
			// A rule's value, or a key computed at run time.
			return ""
		}
		child := n.Child(t.Value)
		if child == nil {
			if i == 0 {
				return "" // no rules at all: Compile refused that already
			}
			var names []string
			for k, c := range n.Children {
				if s, ok := k.(ast.String); ok && !c.Hide {
					names = append(names, string(s))
				}
			}
			slices.Sort(names)
			msg := fmt.Sprintf("%s is not defined by any rule (Sigil loads no data documents, so it is undefined on every request)", ref[:i+1])
			if s, ok := t.Value.(ast.String); ok {
				if near := nearest(string(s), names); near != "" {
					msg += "; did you mean " + withKey(ref, i, near) + "?"
				}
			}
			return msg
		}
		n = child
	}
	return ""
}

// checkInputRef returns why ref is not in the input document, or "" when
// it is (or does not start at input, or reaches a key computed at run
// time, which cannot be checked).
func checkInputRef(ref ast.Ref) string {
	if len(ref) < 2 || !ref[0].Equal(ast.InputRootDocument) {
		return ""
	}
	n := schemaTree
	for i := 1; i < len(ref); i++ {
		at := ref[:i].String()
		bad := ref[:i+1].String()
		switch key := ref[i].Value.(type) {
		case ast.String:
			k := string(key)
			switch {
			case n.leaf():
				return fmt.Sprintf("%s is not in Sigil's input document (%s): %s is a %s", bad, SchemaDoc, at, n.field.Type)
			case n.array:
				return fmt.Sprintf("%s is not in Sigil's input document (%s): %s is an array, indexed by number", bad, SchemaDoc, at)
			case n.elem != nil:
				if n.field.LowerKeys && k != strings.ToLower(k) {
					return fmt.Sprintf("%s is never present: names in %s are lower-case (%s); did you mean %s?", bad, at, SchemaDoc, withKey(ref, i, strings.ToLower(k)))
				}
				n = n.elem
			default:
				child, ok := n.fields[k]
				if !ok {
					return fmt.Sprintf("%s is not in Sigil's input document (%s); %s", bad, SchemaDoc, suggest(ref, i, n))
				}
				n = child
			}
		case ast.Number:
			if !n.array {
				what := "an object"
				if n.leaf() {
					what = "a " + n.field.Type
				}
				return fmt.Sprintf("%s is not in Sigil's input document (%s): %s is %s, not an array", bad, SchemaDoc, at, what)
			}
			n = n.elem
		case ast.Var, ast.Ref, ast.Call:
			// A key computed at run time: it may take any value.
			return ""
		default:
			return fmt.Sprintf("%s is not in Sigil's input document (%s): keys of %s are strings", bad, SchemaDoc, at)
		}
	}
	return ""
}

// suggest names the valid field nearest to ref[i] among n's, or lists them
// all when none is near.
func suggest(ref ast.Ref, i int, n *node) string {
	if near := nearest(string(ref[i].Value.(ast.String)), n.order); near != "" {
		return "did you mean " + withKey(ref, i, near) + "?"
	}
	return fmt.Sprintf("%s has: %s", ref[:i].String(), strings.Join(n.order, ", "))
}

// nearest is the name in names nearest to typo, or "" when none is near
// (more than a third of its letters, and at least two, differ).
func nearest(typo string, names []string) string {
	best, bestD := "", -1
	for _, name := range names {
		if d := levenshtein(typo, name); bestD < 0 || d < bestD {
			best, bestD = name, d
		}
	}
	if best == "" || bestD > max(2, len(typo)/3) {
		return ""
	}
	return best
}

// withKey is ref[:i+1] with its last key replaced by key.
func withKey(ref ast.Ref, i int, key string) string {
	r := ref[:i+1].Copy()
	r[i] = ast.StringTerm(key)
	return r.String()
}

// levenshtein is the edit distance between a and b (insertions, deletions
// and substitutions of bytes).
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
