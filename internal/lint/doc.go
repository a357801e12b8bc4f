// Package lint holds checks of the code base's conventions that gofmt, vet
// and staticcheck do not make, run as ordinary tests (go test
// ./internal/lint/, part of make check), over every library package (not
// package main, e2e or generated code):
//
//   - every error a package makes carries that package's prefix
//     (errprefix_test.go);
//   - log field names are the ones docs/logging.md lists, never a retired
//     one (logfields_test.go);
//   - no process-global mutable state: no package-level variable of a
//     sync or sync/atomic type (globalstate_test.go);
//   - Linux-only code the rest of its package calls has a twin for other
//     systems, so the CLI builds for macOS (portable_test.go);
//   - measured figures live in bench/README.md, not in comments
//     (figures_test.go).
//
// It has no code of its own beyond its tests.
package lint
