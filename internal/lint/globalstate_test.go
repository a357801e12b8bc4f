package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"testing"
)

// globalStateAllowed lists package-level mutable variables kept on
// purpose, as "dir/file.go:name" → why.
var globalStateAllowed = map[string]string{
	"proxy/peeruid_linux.go:diagSeq": "a netlink sequence number: unique per process as netlink(7) asks; no caller sees it",
	"auditstream/sink/sink.go:mu":    "guards the exporter registry, filled by each sink file's init (database/sql's driver pattern) and only read after",
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
			for _, id := range stateVars(f) {
				if _, ok := globalStateAllowed[name+":"+id.Name]; !ok {
					t.Errorf("%s: package-level %s is process-global state: make it a field of the object that owns it (or list it in globalStateAllowed with the reason)", p.fset.Position(id.Pos()), id.Name)
				}
			}
		}
	}
}

// TestNoProcessGlobalStateCatches feeds the check each way of declaring
// such a variable, so that it cannot stop seeing one in silence.
func TestNoProcessGlobalStateCatches(t *testing.T) {
	src := `package p

var typed sync.Map
var lit = sync.Map{}
var ptr = &sync.Mutex{}
var made = new(atomic.Int64)
var generic atomic.Pointer[int]
var pool = sync.Pool{}
var errX = errors.New("p: x")
`
	f, err := parser.ParseFile(token.NewFileSet(), "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, id := range stateVars(f) {
		got = append(got, id.Name)
	}
	if want := []string{"typed", "lit", "ptr", "made", "generic"}; !slices.Equal(got, want) {
		t.Errorf("state variables found: %v, want %v", got, want)
	}
}

// stateVars returns the package-level variables of f that hold state of
// one of stateTypes.
func stateVars(f *ast.File) []*ast.Ident {
	var out []*ast.Ident
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, id := range vs.Names {
				if isStateType(vs.Type) || i < len(vs.Values) && isStateValue(vs.Values[i]) {
					out = append(out, id)
				}
			}
		}
	}
	return out
}

// isStateValue reports whether e makes a value of one of stateTypes
// (sync.Map{}, &sync.Map{}, new(sync.Mutex)), for a variable declared
// without its type.
func isStateValue(e ast.Expr) bool {
	switch x := e.(type) {
	case *ast.UnaryExpr:
		return x.Op == token.AND && isStateValue(x.X)
	case *ast.CompositeLit:
		return isStateType(x.Type)
	case *ast.CallExpr:
		fn, ok := x.Fun.(*ast.Ident)
		return ok && fn.Name == "new" && len(x.Args) == 1 && isStateType(x.Args[0])
	}
	return false
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
