package naming

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// idSchemeLiterals are the pieces of the ID scheme a hand-written parser
// would spell: cutting "/ns/" off a path, looking for "/sa/" or "/sigil/".
var idSchemeLiterals = map[string]bool{
	"/ns/": true, "ns/": true, "/ns": true, "/sa/": true, "sa/": true, "/sa": true,
	"/sigil/": true, "sigil/": true, "/sigil": true, "/sigil/agent/": true, "/sigil/agent": true, "sigil/agent/": true,
	"spiffe://": true,
}

// nameRuleFunc matches the name of a function that would be a second
// copy of one of naming's rules.
var nameRuleFunc = regexp.MustCompile(`(?i)^(is|valid|validate|check|parse)(dns1123(label|subdomain)?|labelvalue|labelkey|servicename|namespace|nodename|spiffeid|workloadid|agentid|endpoint|endpointaddr(ess)?)$`)

// stringsCutters are the functions that take a path apart.
var stringsCutters = map[string]bool{
	"Split": true, "SplitN": true, "SplitAfter": true, "SplitAfterN": true, "Cut": true, "CutPrefix": true, "CutSuffix": true,
	"TrimPrefix": true, "TrimSuffix": true, "HasPrefix": true, "HasSuffix": true, "Index": true, "LastIndex": true,
	"Count": true, "Fields": true, "Contains": true, "Base": true, "Dir": true,
}

// handParsedPorts lists the functions outside naming allowed to read a
// port from net.SplitHostPort themselves, with the reason: none of them
// reads an endpoint address.
var handParsedPorts = map[string]string{
	"proxy/config.go:Validate":      "--app is the local app's address (any host the sidecar can dial, localhost included); only its port is read, for the policy's destination.port",
	"traffic/validate.go:authority": "rewrite.authority and redirect.authority may name a host outside the mesh, which naming has no rule for yet (Resolver.Authority reads mesh hosts only); a known second host[:port] rule, to move into naming",
}

// TestOneParserPerName walks every non-test Go file of the module outside
// naming (and e2e) and fails where one takes a SPIFFE ID's path apart by hand, spells a
// piece of the ID scheme, declares its own copy of a name rule, or reads
// an address's host or port from net.SplitHostPort to judge it (an
// endpoint address is naming.ParseEndpoint's). The scheme and rules live
// here only, so server, agent, proxy and policy cannot drift apart.
func TestOneParserPerName(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			switch {
			// e2e runs the binaries as a user would and spells IDs as a
			// user types them.
			case rel == "naming", rel == "e2e", strings.HasPrefix(d.Name(), "."), d.Name() == "testdata", rel == "bench/tools", rel == "bin":
				return filepath.SkipDir
			}
			return nil
		}
		// Tests spell IDs and addresses as inputs; the rules are for
		// the code that reads them.
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") || strings.HasSuffix(rel, ".pb.go") {
			return nil
		}
		files++
		for _, p := range handParsedNames(t, path, rel) {
			t.Errorf("%s; use package naming", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("walked %d Go files under %s; the guard would pass vacuously", files, root)
	}
}

func handParsedNames(t *testing.T, path, rel string) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	report := func(n ast.Node, format string, args ...any) {
		out = append(out, fmt.Sprintf("%s:%d: %s", rel, fset.Position(n.Pos()).Line, fmt.Sprintf(format, args...)))
	}
	imports := map[*ast.BasicLit]bool{}
	for _, im := range f.Imports {
		imports[im.Path] = true
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncDecl:
			if nameRuleFunc.MatchString(n.Name.Name) {
				report(n, "func %s declares a second copy of a name rule", n.Name.Name)
			}
			if n.Body != nil {
				checkSplitHostPort(n, rel, report)
				checkPathVars(n.Body, report)
			}
		case *ast.BasicLit:
			if n.Kind == token.STRING && !imports[n] {
				if s, err := strconv.Unquote(n.Value); err == nil && idSchemeLiterals[s] {
					report(n, "the literal %q spells a piece of the SPIFFE ID scheme", s)
				}
			}
		case *ast.CallExpr:
			if pkg, fn := selector(n.Fun); (pkg == "strings" || pkg == "path") && stringsCutters[fn] {
				for _, a := range n.Args {
					if isIDPath(a) {
						report(n, "%s.%s(….Path()) takes a SPIFFE ID's path apart by hand", pkg, fn)
					}
				}
			}
		}
		return true
	})
	return out
}

// isIDPath reports whether e is a SPIFFE ID's path read in place:
// id.Path() or id.URL().Path.
func isIDPath(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.CallExpr:
		_, m := selector(e.Fun)
		return m == "Path" && len(e.Args) == 0
	case *ast.SelectorExpr:
		call, ok := e.X.(*ast.CallExpr)
		if !ok || e.Sel.Name != "Path" || len(call.Args) != 0 {
			return false
		}
		_, m := selector(call.Fun)
		return m == "URL"
	}
	return false
}

// checkPathVars reports a path read into a variable first (p :=
// id.Path()) and then taken apart by strings or path.
func checkPathVars(body *ast.BlockStmt, report func(ast.Node, string, ...any)) {
	vars := map[string]bool{}
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			if len(n.Lhs) == len(n.Rhs) {
				for i, r := range n.Rhs {
					if id, ok := n.Lhs[i].(*ast.Ident); ok && isIDPath(r) {
						vars[id.Name] = true
					}
				}
			}
		case *ast.CallExpr:
			if pkg, fn := selector(n.Fun); (pkg == "strings" || pkg == "path") && stringsCutters[fn] {
				for _, a := range n.Args {
					if id, ok := a.(*ast.Ident); ok && vars[id.Name] {
						report(n, "%s.%s(%s) takes a SPIFFE ID's path (read into %s) apart by hand", pkg, fn, id.Name, id.Name)
					}
				}
			}
		}
		return true
	})
}

// checkSplitHostPort reports a function that passes a host or port from
// net.SplitHostPort to an IP or number parser: a hand-written address
// rule.
func checkSplitHostPort(fn *ast.FuncDecl, rel string, report func(ast.Node, string, ...any)) {
	if _, ok := handParsedPorts[rel+":"+fn.Name.Name]; ok {
		return
	}
	parts := map[string]bool{} // names bound to SplitHostPort's results
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			if len(n.Rhs) == 1 {
				if call, ok := n.Rhs[0].(*ast.CallExpr); ok {
					if pkg, f := selector(call.Fun); pkg == "net" && f == "SplitHostPort" {
						for _, l := range n.Lhs[:min(2, len(n.Lhs))] {
							if id, ok := l.(*ast.Ident); ok && id.Name != "_" {
								parts[id.Name] = true
							}
						}
					}
				}
			}
			// A part copied to another name (host, port = h, p) is
			// still a part.
			if len(n.Lhs) == len(n.Rhs) {
				for i, r := range n.Rhs {
					if rid, ok := r.(*ast.Ident); ok && parts[rid.Name] {
						if lid, ok := n.Lhs[i].(*ast.Ident); ok && lid.Name != "_" {
							parts[lid.Name] = true
						}
					}
				}
			}
		case *ast.CallExpr:
			pkg, f := selector(n.Fun)
			judge := pkg == "net" && f == "ParseIP" || pkg == "netip" && f == "ParseAddr" || pkg == "strconv" && (f == "Atoi" || f == "ParseUint" || f == "ParseInt")
			if judge && len(n.Args) > 0 {
				if id, ok := n.Args[0].(*ast.Ident); ok && parts[id.Name] {
					report(n, "%s.%s(%s) judges a part of net.SplitHostPort by hand (an endpoint address is naming.ParseEndpoint's)", pkg, f, id.Name)
				}
			}
		}
		return true
	})
}

// selector returns pkg and name of pkg.name, or of x.name with pkg "".
func selector(e ast.Expr) (pkg, name string) {
	s, ok := e.(*ast.SelectorExpr)
	if !ok {
		return "", ""
	}
	if id, ok := s.X.(*ast.Ident); ok {
		return id.Name, s.Sel.Name
	}
	return "", s.Sel.Name
}

// TestOneParserPerNameCatches feeds the guard code that parses names by
// hand, so that a guard which stopped seeing them fails rather than
// passing in silence.
func TestOneParserPerNameCatches(t *testing.T) {
	src := `package p

import (
	"net"
	"strconv"
	"strings"
)

func direct(id interface{ Path() string }) []string { return strings.Split(id.Path(), "/") }

func viaURL(id interface{ URL() *url.URL }) []string { return strings.SplitN(id.URL().Path, "/", 5) }

func viaVar(id interface{ Path() string }) []string {
	p := id.Path()
	return strings.Split(p, "/")
}

func literal(s string) bool { return strings.HasPrefix(s, "/ns/") }

func validServiceName(s string) bool { return s != "" }

func addr(a string) bool {
	h, pt, err := net.SplitHostPort(a)
	host, port := h, pt
	n, _ := strconv.Atoi(port)
	return err == nil && net.ParseIP(host) != nil && n > 0
}
`
	path := filepath.Join(t.TempDir(), "p.go")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(handParsedNames(t, path, "p/p.go"), "\n")
	for _, want := range []string{
		"p/p.go:9: strings.Split(….Path())",
		"p/p.go:11: strings.SplitN(….Path())",
		"p/p.go:15: strings.Split(p)",
		`p/p.go:18: the literal "/ns/"`,
		"p/p.go:20: func validServiceName",
		"p/p.go:25: strconv.Atoi(port)",
		"p/p.go:26: net.ParseIP(host)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the guard misses %q; it reported:\n%s", want, got)
		}
	}
}
