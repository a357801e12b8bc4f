package main

import (
	"log/slog"
	"runtime"

	"github.com/sigil-mesh/sigil/internal/exemap"
)

// splitExecutable bounds the kernel's fault-around on the executable to
// chunk bytes (--fault-around-bytes; 0: not at all) before start-up
// faults in its code. A failure costs memory, not function: it is logged.
func splitExecutable(chunk int, log *slog.Logger) {
	if chunk == 0 || runtime.GOOS != "linux" {
		return
	}
	n, err := exemap.Split(chunk)
	if err != nil {
		log.Warn("executable's mappings left whole: a page fault maps 64 KiB around it", "error", err)
		return
	}
	log.Debug("executable's mappings split", "mappings", n, "bytes", chunk)
}
