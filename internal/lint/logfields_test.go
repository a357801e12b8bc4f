package lint

import (
	"go/ast"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// retiredFields are log field names once used for things that have a
// name of their own (docs/logging.md).
// docs/logging.md's "Retired names" lists the same.
var retiredFields = map[string]string{
	"agent":        "agent_id",
	"entry":        "entry_id",
	"expires":      "not_after",
	"expiry":       "not_after",
	"svid_expires": "not_after",
	"id":           "agent_id, spiffe_id or entry_id",
}

// A log field has one name everywhere (agent_id, spiffe_id, not_after...),
// listed in docs/logging.md; a retired name or one missing from that table
// fails here, so the next contributor reuses a name instead of inventing a
// synonym (the code base once had agent and agent_id, expires, not_after
// and svid_expires).
func TestLogFieldNames(t *testing.T) {
	doc, err := os.ReadFile(root + "/docs/logging.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	// The first cell of each table row names the fields.
	for _, m := range regexp.MustCompile(`(?m)^\|([^|]*)\|`).FindAllSubmatch(doc, -1) {
		for _, k := range regexp.MustCompile("`([a-z_]+)`").FindAllSubmatch(m[1], -1) {
			documented[string(k[1])] = true
		}
	}
	for _, p := range packages(t) {
		for _, f := range p.files {
			imports := importNames(f)
			ast.Inspect(f, func(n ast.Node) bool {
				for _, key := range logKeys(n, imports) {
					name, _ := strconv.Unquote(key.Value)
					if use, ok := retiredFields[name]; ok {
						t.Errorf("%s: log field %q is retired: use %q (docs/logging.md)", p.fset.Position(key.Pos()), name, use)
					} else if !documented[name] {
						t.Errorf("%s: log field %q is not in docs/logging.md: reuse a name there, or add a row for a new thing", p.fset.Position(key.Pos()), name)
					}
				}
				return true
			})
		}
	}
}

// logKeys returns the constant keys of a slog call: a Logger's Debug,
// Info, Warn, Error (and their Context forms) or With, or an attribute
// constructor (slog.String, slog.Any...). Calls on another imported
// package (status.Error, say) are not slog's.
func logKeys(n ast.Node, imports map[string]bool) []*ast.BasicLit {
	c, ok := n.(*ast.CallExpr)
	if !ok {
		return nil
	}
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok {
		return nil
	}
	if x, ok := sel.X.(*ast.Ident); ok && imports[x.Name] && x.Name != "slog" {
		return nil
	}
	first, step := -1, 2
	switch sel.Sel.Name {
	case "Debug", "Info", "Warn", "Error":
		first = 1
	case "DebugContext", "InfoContext", "WarnContext", "ErrorContext":
		first = 2
	case "With":
		first = 0
	case "String", "Int", "Int64", "Uint64", "Float64", "Bool", "Time", "Duration", "Any", "Group":
		if x, ok := sel.X.(*ast.Ident); ok && x.Name == "slog" {
			first, step = 0, len(c.Args)
		}
	}
	if first < 0 {
		return nil
	}
	var keys []*ast.BasicLit
	for i := first; i < len(c.Args); i += step {
		if lit, ok := c.Args[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			keys = append(keys, lit)
		}
	}
	return keys
}

// importNames returns the names f's imports are known by.
func importNames(f *ast.File) map[string]bool {
	names := map[string]bool{}
	for _, im := range f.Imports {
		path, _ := strconv.Unquote(im.Path.Value)
		name := path[strings.LastIndex(path, "/")+1:]
		if im.Name != nil {
			name = im.Name.Name
		}
		names[name] = true
	}
	return names
}
