package lint

import (
	"go/ast"
	"go/token"
	"testing"
)

// globalStateAllowed lists package-level mutable variables kept on
// purpose, as "dir/file.go:name" → why.
var globalStateAllowed = map[string]string{
	"proxy/peeruid_linux.go:diagSeq": "a netlink sequence number: unique per process as netlink(7) asks; no caller sees it",
}

// stateTypes are the types whose package-level variables are state shared
// by every user of the package (a sync.Pool is not: it holds nothing a
// caller can tell apart).
var stateTypes = map[string]map[string]bool{
	"sync":   {"Map": true, "Mutex": true, "RWMutex": true, "Once": true},
	"atomic": {"Bool": true, "Int32": true, "Int64": true, "Uint32": true, "Uint64": true, "Pointer": true, "Value": true},
}

// A library package keeps its state in the object that owns it, never in a
// process-global variable: two sidecars (or two tests) in one process must
// not share a cache (proxy/forward.go once kept every service's default
// route in a package-level sync.Map).
func TestNoProcessGlobalState(t *testing.T) {
	for _, p := range packages(t) {
		for name, f := range p.files {
			for _, d := range f.Decls {
				g, ok := d.(*ast.GenDecl)
				if !ok || g.Tok != token.VAR {
					continue
				}
				for _, s := range g.Specs {
					vs := s.(*ast.ValueSpec)
					if !isStateType(vs.Type) {
						continue
					}
					for _, id := range vs.Names {
						key := name + ":" + id.Name
						if _, ok := globalStateAllowed[key]; !ok {
							t.Errorf("%s: package-level %s is process-global state: make it a field of the object that owns it (or list it in globalStateAllowed with the reason)", p.fset.Position(id.Pos()), id.Name)
						}
					}
				}
			}
		}
	}
}

// isStateType reports whether e names one of stateTypes (generic
// instances included).
func isStateType(e ast.Expr) bool {
	switch x := e.(type) {
	case *ast.IndexExpr:
		return isStateType(x.X)
	case *ast.IndexListExpr:
		return isStateType(x.X)
	case *ast.SelectorExpr:
		pkg, ok := x.X.(*ast.Ident)
		return ok && stateTypes[pkg.Name][x.Sel.Name]
	}
	return false
}
