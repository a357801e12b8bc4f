package lint

import (
	"go/ast"
	"go/build"
	"path"
	"path/filepath"
	"sort"
	"testing"
)

// Code built only on Linux (a _linux.go file, or one constrained to
// linux) that the rest of its package calls has a twin for the other
// systems, so the CLI and the packages it shares with the sidecar build
// for macOS, where users run the CLI (proxy/origdst_linux.go once had
// none). make check builds for darwin too; this names the missing twin.
func TestLinuxOnlyCodeHasTwins(t *testing.T) {
	darwin := build.Default
	darwin.GOOS, darwin.CgoEnabled = "darwin", false
	for _, p := range packages(t) {
		linuxOnly := map[string]string{} // name → file declaring it
		elsewhere := map[string]bool{}   // names declared in files darwin builds
		needed := map[string]string{}    // names darwin-built files use from other files
		for name, f := range p.files {
			ok, err := darwin.MatchFile(filepath.Join(root, p.dir), path.Base(name))
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range topLevelNames(f) {
				if ok {
					elsewhere[n] = true
				} else {
					linuxOnly[n] = name
				}
			}
			if ok {
				for _, id := range f.Unresolved {
					needed[id.Name] = name
				}
			}
		}
		var missing []string
		for n, user := range needed {
			if decl, ok := linuxOnly[n]; ok && !elsewhere[n] {
				missing = append(missing, n+" (declared in "+decl+", used by "+user+")")
			}
		}
		sort.Strings(missing)
		for _, m := range missing {
			t.Errorf("%s: no twin for other systems: %s", p.dir, m)
		}
	}
}

// topLevelNames lists the package-level names f declares (methods are
// left out: they need their type, which is checked).
func topLevelNames(f *ast.File) []string {
	var names []string
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil {
				names = append(names, d.Name.Name)
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					names = append(names, s.Name.Name)
				case *ast.ValueSpec:
					for _, id := range s.Names {
						names = append(names, id.Name)
					}
				}
			}
		}
	}
	return names
}
