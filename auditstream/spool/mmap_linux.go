package spool

import (
	"fmt"
	"os"
	"syscall"
)

// mapSegment fills f with zeros from size to n and maps its first n bytes
// shared, so a copy into the mapping is a write into the kernel's page
// cache, as write(2) is. The zeros are written, not reserved: a store
// into the mapping then never allocates a block (which could fail for
// want of space, a SIGBUS) and the file system does no more than mark
// the page dirty (with blocks only reserved, fallocate(2), ext4 converts
// an extent at the first store to each page, which measured slower than
// write(2)).
func mapSegment(f *os.File, size, n int64) ([]byte, error) {
	zeros := make([]byte, 64<<10)
	for off := size; off < n; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), n-off)], off); err != nil {
			return nil, fmt.Errorf("spool: filling %s: %w", f.Name(), err)
		}
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(n), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("spool: mapping %s: %w", f.Name(), err)
	}
	return m, nil
}

// unmapSegment undoes mapSegment's mapping.
func unmapSegment(m []byte) error {
	if err := syscall.Munmap(m); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// releaseMapped drops b, page aligned and inside a mapping of
// mapSegment, from this process's resident set (MADV_DONTNEED); its
// content stays in the file's page cache.
func releaseMapped(b []byte) error {
	if err := syscall.Madvise(b, syscall.MADV_DONTNEED); err != nil {
		return fmt.Errorf("spool: releasing read pages: %w", err)
	}
	return nil
}
