package policy

import (
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
)

// withoutBuiltins are OPA built-ins a Sigil policy may not call: they
// reach outside the input document. http.send and net.lookup_ip_addr make
// network calls from where the policy runs (the sidecar on every request,
// the server when it runs a Policy resource's tests at apply, which would
// let anyone who may apply a Policy send requests from the server's
// network position); opa.runtime exposes the process's environment. A
// decision depends on its input alone, which is also what lets decisions
// be cached (cache.go) and replayed (sigil policy diff).
var withoutBuiltins = []string{"http.send", "net.lookup_ip_addr", "opa.runtime"}

// Capabilities returns what a Sigil policy may use: OPA's built-ins of
// this version except withoutBuiltins. Compile, Check and the tests the
// server runs (package regotest) all compile with it, so a policy calling
// one of them is refused everywhere with OPA's "undefined function" error
// naming the call's file and line.
func Capabilities() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = slices.DeleteFunc(caps.Builtins, func(b *ast.Builtin) bool {
		return slices.Contains(withoutBuiltins, b.Name)
	})
	return caps
}
