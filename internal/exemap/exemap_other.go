//go:build !linux

package exemap

import "errors"

// errNotLinux: mappings are read from Linux's /proc.
var errNotLinux = errors.New("exemap: the executable's mappings are known on Linux only")

// Ranges is Linux-only.
func Ranges() ([]Range, error) { return nil, errNotLinux }

// Split is Linux-only: fault-around is Linux's.
func Split(int) (int, error) { return 0, errNotLinux }

// Release releases nothing here.
func Release([]Range) int64 { return 0 }
