//go:build !linux

package proxy

import (
	"runtime/debug"
	"time"
)

// releaseStartupMemory returns start-up garbage to the OS; trimming the
// executable's pages is Linux-only.
func releaseStartupMemory() int64 {
	debug.FreeOSMemory()
	return 0
}

// residentBytes is unknown here: releaseWhenQuiet does not run.
func residentBytes() int64 { return -1 }

// processCPU is not read here (releaseWhenQuiet does not run).
func processCPU() time.Duration { return 0 }
