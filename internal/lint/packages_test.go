package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// root is the module's root, from this package's directory.
const root = "../.."

// notYet lists directories the checks skip while another branch rewrites
// them, so that two branches of one step need not both fix them; it is
// emptied when they merge (it is empty: the structure step's branches have
// all merged).
var notYet = []string{}

// pkg is one parsed directory of Go files (tests and generated files left
// out).
type pkg struct {
	dir   string // slash-separated, relative to the module root
	name  string
	fset  *token.FileSet
	files map[string]*ast.File // file name relative to the root → AST
}

// packages parses every library directory of the module: not the
// separately built tool modules, not testdata, not the test-only e2e
// suite, not package main.
func packages(t *testing.T) []pkg {
	t.Helper()
	byDir := map[string]*pkg{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			base := d.Name()
			if rel != "." && (strings.HasPrefix(base, ".") || base == "testdata" || base == "e2e" || rel == "bench/tools" || skipped(rel)) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		p := byDir[filepath.Dir(rel)]
		if p == nil {
			p = &pkg{dir: filepath.Dir(rel), fset: token.NewFileSet(), files: map[string]*ast.File{}}
			byDir[p.dir] = p
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(p.fset, rel, src, parser.ParseComments)
		if err != nil {
			return err
		}
		if ast.IsGenerated(f) {
			return nil
		}
		p.name = f.Name.Name
		p.files[rel] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []pkg
	for _, p := range byDir {
		if p.name != "" && p.name != "main" {
			out = append(out, *p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].dir < out[j].dir })
	if len(out) < 10 {
		t.Fatalf("found only %d packages under %s: is root right?", len(out), root)
	}
	return out
}

// skipped reports whether dir is in notYet or under one of its entries.
func skipped(dir string) bool {
	for _, s := range notYet {
		if dir == s || strings.HasPrefix(dir, s+"/") {
			return true
		}
	}
	return false
}
