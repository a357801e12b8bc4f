//go:build race

package h2conn

// raceEnabled: the tests run under the race detector, whose sync.Pool
// drops a share of what is put back, so pooled buffers are made anew.
const raceEnabled = true
