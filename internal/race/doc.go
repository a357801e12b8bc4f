// Package race says whether the program was built with the race detector
// (-race): tests use it to skip allocation counts and timing ratios the
// detector voids, and e2e builds the binaries under test the same way.
package race
