// Package exemap holds the read-only mappings of the running executable:
// listing them (Ranges), for the sidecar to give their pages back when it
// goes quiet, and cutting them into small mappings (Split) so that a page
// fault brings in only a little of them.
//
// Why Split: on a page fault in a file mapping, Linux maps not only the
// page asked for but the pages of the page cache around it, 64 KiB in all
// (fault-around; fault_around_bytes in debugfs, machine-wide), clamped to
// the mapping (VMA) the fault is in. A Go program touches its code and
// its runtime's tables (pclntab, stack maps: read by every garbage
// collection's stack scan) a few hundred bytes here and there across tens
// of megabytes, so fault-around makes a multiple of what it uses resident
// (bench/README.md, "Memory"). madvise(MADV_RANDOM) does not turn
// fault-around off; mappings of a page each do.
package exemap

// Range is one read-only mapping of the executable: [Start, End), byte
// addresses.
type Range struct{ Start, End uintptr }
