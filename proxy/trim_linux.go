package proxy

import (
	"bufio"
	"bytes"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
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
func releaseStartupMemory() (released int64) {
	debug.FreeOSMemory()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// 00400000-00c3a000 r-xp 00000000 08:01 1234 /path/to/exe
		f := strings.Fields(sc.Text())
		if len(f) != 6 || f[5] != exe || (f[1] != "r-xp" && f[1] != "r--p") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), syscall.MADV_DONTNEED); errno == 0 {
			released += int64(end - start)
		}
	}
	return released
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
