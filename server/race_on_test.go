//go:build race

package server

// raceEnabled: the tests run under the race detector, whose slowdown is
// uneven enough to void timing ratios.
const raceEnabled = true
