package proxy

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sigil-mesh/sigil/internal/exemap"
)

// releaseStartupMemory gives back what only start-up needed: heap garbage
// (OPA compiling the policy, package initialisation) and the pages of the
// executable that were read once — init code of every linked package and
// the data it walked. Those are clean file pages, still in the page cache;
// unmapping them from this process (MADV_DONTNEED) takes them out of its
// resident set, and code that runs again faults back in from the cache.
//
// Only the read-only mappings of our own executable are touched (r-xp and
// r--p: text and rodata, which a static Go binary never writes), so no
// data can be lost. Most of an idle sidecar's resident memory was once
// such pages of its binary (before and after: bench/README.md).
func releaseStartupMemory() int64 {
	rs, err := exemap.Ranges() // first: its garbage goes too
	debug.FreeOSMemory()
	if err != nil {
		return 0
	}
	return exemap.Release(rs)
}

// residentBytes is this process's resident set (VmRSS: the second field
// of /proc/self/statm, in pages), or -1 if it cannot be read.
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return -1
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return -1
	}
	return pages * int64(os.Getpagesize())
}

// processCPU is the CPU time (user and system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
