// Package lint holds checks of the code base's conventions that gofmt, vet
// and staticcheck do not make, run as ordinary tests (go test
// ./internal/lint/, part of make check): no process-global mutable state
// in library packages, and every error a package makes carries that
// package's prefix. It has no code of its own beyond its tests.
package lint
