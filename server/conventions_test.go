package server

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// conventionDirs are the packages these tests read, with the prefix their
// errors carry.
var conventionDirs = map[string]string{
	".":               "server: ",
	"registry":        "registry: ",
	"../api/admin/v1": "adminv1: ",
}

// parseDir returns the non-test files of dir, parsed.
func parseDir(t *testing.T, dir string) (*token.FileSet, []*ast.File) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, n := range names {
		if strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, n, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		t.Fatalf("%s: no Go files", dir)
	}
	return fset, files
}

// callTo reports whether e calls pkg.name.
func callTo(e ast.Expr, pkg string, names ...string) (*ast.CallExpr, bool) {
	call, ok := e.(*ast.CallExpr)
	if !ok {
		return nil, false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return nil, false
	}
	if id, ok := sel.X.(*ast.Ident); !ok || id.Name != pkg {
		return nil, false
	}
	for _, n := range names {
		if sel.Sel.Name == n {
			return call, true
		}
	}
	return nil, false
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// TestErrorPrefix checks that an error these packages return or declare
// names its package first (go-spiffe's "x509svid: %w"), or wraps one of
// the package's sentinels that does ("%w: agent %s"). Parts of a joined
// error that is prefixed where it is returned are not returns, and the
// admin API's messages (adminv1.Errorf) and gRPC statuses are answers to
// a caller, sent as they are.
func TestErrorPrefix(t *testing.T) {
	for dir, prefix := range conventionDirs {
		fset, files := parseDir(t, dir)
		check := func(e ast.Expr) {
			call, ok := callTo(e, "fmt", "Errorf")
			if !ok {
				call, ok = callTo(e, "errors", "New")
			}
			if !ok || len(call.Args) == 0 {
				return
			}
			msg, ok := stringLit(call.Args[0])
			if ok && !strings.HasPrefix(msg, prefix) && !strings.HasPrefix(msg, "%w") {
				t.Errorf("%s: error %q lacks the prefix %q", fset.Position(call.Pos()), msg, prefix)
			}
		}
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.ReturnStmt:
					for _, r := range n.Results {
						check(r)
					}
				case *ast.ValueSpec: // sentinels: var ErrX = errors.New(...)
					for _, v := range n.Values {
						check(v)
					}
				}
				return true
			})
		}
	}
}

// bannedLogKeys are log field names that say one thing in several ways;
// the value is the name to use (the same across the mesh's packages).
var bannedLogKeys = map[string]string{
	"agent":        "agent_id (an agent's SPIFFE ID)",
	"entry":        "entry_id",
	"expires":      "not_after (a certificate's expiry)",
	"expiry":       "not_after (a certificate's expiry)",
	"svid_expires": "not_after (a certificate's expiry)",
	"id":           "agent_id, spiffe_id or entry_id: which ID",
}

var logKey = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// TestLogFieldNames checks the field names of every log call in these
// packages: snake_case constants, and one name per thing (agent_id for an
// agent's SPIFFE ID, spiffe_id for a workload's, not_after for a
// certificate's expiry).
func TestLogFieldNames(t *testing.T) {
	for dir := range conventionDirs {
		fset, files := parseDir(t, dir)
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || len(call.Args) < 1 {
					return true
				}
				switch sel.Sel.Name {
				case "Debug", "Info", "Warn", "Error":
				default:
					return true
				}
				if _, ok := stringLit(call.Args[0]); !ok {
					return true // not a log call: its first argument is the message
				}
				for i := 1; i < len(call.Args); i += 2 {
					key, ok := stringLit(call.Args[i])
					if !ok {
						if _, isCall := call.Args[i].(*ast.CallExpr); !isCall { // slog.Attr values are fine
							t.Errorf("%s: log field name is not a constant", fset.Position(call.Args[i].Pos()))
						}
						continue
					}
					if !logKey.MatchString(key) {
						t.Errorf("%s: log field %q is not snake_case", fset.Position(call.Args[i].Pos()), key)
					}
					if want, bad := bannedLogKeys[key]; bad {
						t.Errorf("%s: log field %q: use %s", fset.Position(call.Args[i].Pos()), key, want)
					}
				}
				return true
			})
		}
	}
}
