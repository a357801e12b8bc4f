//go:build !linux

package proxy

import "runtime/debug"

// releaseStartupMemory returns start-up garbage to the OS; trimming the
// executable's pages is Linux-only.
func releaseStartupMemory() int64 {
	debug.FreeOSMemory()
	return 0
}
