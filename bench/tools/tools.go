//go:build tools

// Package tools pins the peers and load generator `make bench` builds, in
// a module of their own so that they never change the versions Sigil
// itself is built with.
package tools
