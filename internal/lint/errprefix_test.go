package lint

import (
	"go/ast"
	"go/token"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// prefixAllowed lists errors that keep a text without their package's
// prefix, as "dir: text" → why.
var prefixAllowed = map[string]string{
	"pathnorm: invalid request target":                                                                      "the sentinel ErrInvalid, compared by identity and always wrapped after the prefix (pathnorm: invalid request target: why)",
	"privatefile: lets group or others read it":                                                             "the sentinel ErrReadable, compared by identity and always wrapped mid-sentence after the prefix (privatefile: PATH: mode 0644 lets group or others read it)",
	"cmd/internal/logflag: --log-level %q: want debug, info, warn or error":                                 "a flag's message, which the command prints as its own, as package main's",
	"naming: not in the trust domain":                                                                       "the sentinel ErrOtherTrustDomain, compared by identity and wrapped mid-sentence after the prefix (naming: ID: not in the trust domain TD)",
	"naming: a workload ID needs a path (spiffe://<td>/<path>); the bare trust domain ID names no workload": "the sentinel ErrNoPath, compared by identity and wrapped after the prefix",
	"naming: not an agent ID":                                                                               "the sentinel ErrNotAgent, compared by identity and wrapped after the prefix",
	"naming: empty name":                                                                                    "splitName's reason, wrapped by every caller after the prefix (naming: host \"x\": empty name)",
	"naming: longer than %d characters":                                                                     "splitName's reason, wrapped by every caller after the prefix",
	"naming: empty label":                                                                                   "splitName's reason, wrapped by every caller after the prefix",
	"naming: label %q: want letters, digits and inner '-', at most 63":                                      "splitName's reason, wrapped by every caller after the prefix",
	"server:   (the tests of one apply may take %s together; they were cut off)":                            "an indented line of the list of failed tests, joined under the apply's prefixed error",
}

// Every error a package makes (errors.New, fmt.Errorf with a constant
// text) starts with the package's name and ": ", as go-spiffe's do
// ("x509svid: ..."), so a message read in a log says where it came from
// (traffic's once carried none, proxy's a third). A text that starts with
// %w starts with the error it wraps, which carries its own prefix.
func TestErrorPrefixes(t *testing.T) {
	for _, p := range packages(t) {
		prefix := p.name + ": "
		var bad []string
		for _, f := range p.files {
			parts := joinedParts(f)
			ast.Inspect(f, func(n ast.Node) bool {
				if parts[n] {
					return true
				}
				text, pos, ok := errorText(n)
				if !ok || strings.HasPrefix(text, prefix) || strings.HasPrefix(text, "%w") {
					return true
				}
				if _, ok := prefixAllowed[p.dir+": "+text]; ok {
					return true
				}
				bad = append(bad, p.fset.Position(pos).String()+": "+strconv.Quote(text))
				return true
			})
		}
		sort.Strings(bad)
		for _, b := range bad {
			t.Errorf("%s: error text lacks the prefix %q (or list it in prefixAllowed with the reason)", b, prefix)
		}
	}
}

// joinedParts returns the error calls appended to a slice of parts (the
// code base's idiom: errs = append(errs, fmt.Errorf(...)), later
// errors.Join'ed): each is one line of a joined error, and the join
// carries the package's prefix once ("server: invalid configuration:
// ...") or is an answer to an API caller, which names the field, not the
// package.
func joinedParts(f *ast.File) map[ast.Node]bool {
	parts := map[ast.Node]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) < 2 {
			return true
		}
		if fn, ok := call.Fun.(*ast.Ident); !ok || fn.Name != "append" {
			return true
		}
		if slice, ok := call.Args[0].(*ast.Ident); !ok || !partSlices[slice.Name] {
			return true
		}
		for _, a := range call.Args[1:] {
			parts[a] = true
		}
		return true
	})
	return parts
}

// partSlices are the names the code base gives a slice of error parts.
var partSlices = map[string]bool{"errs": true, "refused": true}

// errorText returns the constant text of an errors.New or fmt.Errorf call.
func errorText(n ast.Node) (string, token.Pos, bool) {
	call, ok := n.(*ast.CallExpr)
	if !ok || len(call.Args) == 0 {
		return "", 0, false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return "", 0, false
	}
	pkg, ok := sel.X.(*ast.Ident)
	if !ok || !(pkg.Name == "errors" && sel.Sel.Name == "New" || pkg.Name == "fmt" && sel.Sel.Name == "Errorf") {
		return "", 0, false
	}
	lit, ok := call.Args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", 0, false
	}
	text, err := strconv.Unquote(lit.Value)
	if err != nil {
		return "", 0, false
	}
	return text, lit.Pos(), true
}
