//go:build !linux

package spool

import (
	"errors"
	"os"
)

// mapSegment is unsupported off Linux: segments are written with
// pwrite(2).
func mapSegment(*os.File, int64, int64) ([]byte, error) { return nil, errors.ErrUnsupported }

// unmapSegment has nothing to undo off Linux.
func unmapSegment([]byte) error { return nil }

// releaseMapped has nothing to release off Linux (nothing is mapped).
func releaseMapped([]byte) error { return nil }
