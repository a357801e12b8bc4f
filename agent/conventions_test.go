package agent

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// eachCall calls fn for every call expression pkg.Name(...) or x.Name(...)
// in the non-test Go files of agent/ and its subpackages, with the file's
// package name.
func eachCall(t *testing.T, fn func(fset *token.FileSet, pkgName string, sel *ast.SelectorExpr, call *ast.CallExpr)) {
	t.Helper()
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
					fn(fset, f.Name.Name, sel, call)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// stringLit returns the value of e if it is a string literal.
func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// TestErrorsCarryPackagePrefix: every error made in agent/ and its
// subpackages (fmt.Errorf, errors.New) starts with its package's name, so
// a log line or a CLI message says which part failed. The one exception
// is a config check's item ("--flag ..."), which Validate joins under
// "agent: invalid configuration: ".
func TestErrorsCarryPackagePrefix(t *testing.T) {
	checked := 0
	eachCall(t, func(fset *token.FileSet, pkgName string, sel *ast.SelectorExpr, call *ast.CallExpr) {
		x, ok := sel.X.(*ast.Ident)
		if !ok || len(call.Args) == 0 || !(x.Name == "fmt" && sel.Sel.Name == "Errorf" || x.Name == "errors" && sel.Sel.Name == "New") {
			return
		}
		msg, ok := stringLit(call.Args[0])
		if !ok {
			return
		}
		checked++
		if prefix := pkgName + ": "; !strings.HasPrefix(msg, prefix) && !strings.HasPrefix(msg, "--") {
			t.Errorf("%s: error %q does not start with %q", fset.Position(call.Pos()), msg, prefix)
		}
	})
	if checked < 20 {
		t.Fatalf("checked %d errors, want the agent's (at least 20)", checked)
	}
}

// renamedLogFields are log field names that said the same thing in
// several ways, and the one name each is logged under now.
var renamedLogFields = map[string]string{
	"agent":        "agent_id",  // an agent's SPIFFE ID
	"expires":      "not_after", // a certificate's expiry
	"svid_expires": "not_after",
	"expiry":       "not_after",
	"id":           "spiffe_id", // a workload's SPIFFE ID
}

// isLogger says whether e is the agent's name for a *slog.Logger: log,
// or a field x.log.
func isLogger(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name == "log"
	case *ast.SelectorExpr:
		return e.Sel.Name == "log"
	}
	return false
}

// TestLogFieldNamesConsistent: a thing has one log field name in every
// part of the agent (agent_id for an agent's SPIFFE ID, spiffe_id for a
// workload's, not_after for a certificate's expiry), and field names are
// snake_case constants, so that one query finds it in every line.
func TestLogFieldNamesConsistent(t *testing.T) {
	checked := 0
	eachCall(t, func(fset *token.FileSet, _ string, sel *ast.SelectorExpr, call *ast.CallExpr) {
		switch sel.Sel.Name {
		case "Debug", "Info", "Warn", "Error":
		default:
			return
		}
		if !isLogger(sel.X) {
			return
		}
		for i := 1; i < len(call.Args); i += 2 {
			key, ok := stringLit(call.Args[i])
			if !ok {
				t.Errorf("%s: log field %d is not a constant name", fset.Position(call.Args[i].Pos()), i)
				continue
			}
			checked++
			if want, ok := renamedLogFields[key]; ok {
				t.Errorf("%s: log field %q, want %q", fset.Position(call.Args[i].Pos()), key, want)
			}
			if key != strings.ToLower(key) || strings.ContainsAny(key, " -.") {
				t.Errorf("%s: log field %q is not snake_case", fset.Position(call.Args[i].Pos()), key)
			}
		}
	})
	if checked < 20 {
		t.Fatalf("checked %d log fields, want the agent's (at least 20)", checked)
	}
}
