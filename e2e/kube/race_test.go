//go:build race

package kube

// raceEnabled builds the binaries under test with the race detector when
// the tests themselves run with -race.
const raceEnabled = true
