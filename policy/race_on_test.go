//go:build race

package policy

// raceEnabled: the tests run under the race detector, whose sync.Pool
// drops a share of what is put back (crypto/rand keeps its generators in
// one), so allocation counts do not hold.
const raceEnabled = true
