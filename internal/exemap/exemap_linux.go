package exemap

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Ranges lists the read-only mappings of our own executable (r-xp and
// r--p: text, rodata and the runtime's tables, which a static Go binary
// never writes), adjacent ones merged, from /proc/self/maps. It
// allocates little per line: after Split there are thousands.
func Ranges() ([]Range, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("exemap: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, fmt.Errorf("exemap: %w", err)
	}
	defer f.Close()
	var rs []Range
	suffix := []byte(" " + exe)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 00400000-00c3a000 r-xp 00000000 08:01 1234 /path/to/exe
		line := sc.Bytes()
		if !bytes.HasSuffix(line, suffix) {
			continue
		}
		addrs, rest, ok1 := bytes.Cut(line, []byte(" "))
		perms, _, ok2 := bytes.Cut(rest, []byte(" "))
		lo, hi, ok3 := bytes.Cut(addrs, []byte("-"))
		if !ok1 || !ok2 || !ok3 || (string(perms) != "r-xp" && string(perms) != "r--p") {
			continue
		}
		start, ok1 := parseHex(lo)
		end, ok2 := parseHex(hi)
		if !ok1 || !ok2 || end <= start {
			continue
		}
		if n := len(rs); n > 0 && rs[n-1].End == start {
			rs[n-1].End = end
			continue
		}
		rs = append(rs, Range{start, end})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("exemap: reading /proc/self/maps: %w", err)
	}
	return rs, nil
}

// parseHex parses a lower-case hexadecimal address without allocating.
func parseHex(b []byte) (uintptr, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uintptr
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | uintptr(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | uintptr(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// maxMapShare: Split leaves at least 1 - 1/maxMapShare of the process's
// map count limit (vm.max_map_count) to everything else.
const maxMapShare = 4

// Split cuts the executable's read-only mappings into mappings of chunk
// bytes (a multiple of the page size), so that a page fault in them maps
// at most chunk bytes: every other chunk is marked MADV_DONTDUMP, and the
// kernel does not merge neighbouring mappings whose flags differ.
// DONTDUMP changes nothing else: core dumps leave file-backed private
// mappings out anyway (core(5), coredump_filter's default). It returns
// the mappings there are then; it changes nothing, and returns an error,
// when that many would take more than a quarter of vm.max_map_count. The
// kernel keeps ~200 bytes per mapping (vm_area_struct), charged to the
// process's memory cgroup, not to its resident set.
func Split(chunk int) (int, error) {
	if page := os.Getpagesize(); chunk <= 0 || chunk%page != 0 {
		return 0, fmt.Errorf("exemap: chunk %d: want a positive multiple of the page size (%d)", chunk, page)
	}
	rs, err := Ranges()
	if err != nil {
		return 0, err
	}
	c := uintptr(chunk)
	var n uintptr
	for _, r := range rs {
		n += (r.End - r.Start + c - 1) / c
	}
	limit, err := maxMapCount()
	if err != nil {
		return 0, err
	}
	if n > uintptr(limit/maxMapShare) {
		return 0, fmt.Errorf("exemap: %d mappings of %d bytes would pass a quarter of vm.max_map_count (%d)", n, chunk, limit)
	}
	for _, r := range rs {
		if err := splitRange(r, c); err != nil {
			return 0, err
		}
	}
	return int(n), nil
}

// splitRange marks every other chunk of r MADV_DONTDUMP, from the second.
func splitRange(r Range, chunk uintptr) error {
	for a := r.Start + chunk; a < r.End; a += 2 * chunk {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, a, min(chunk, r.End-a), unix.MADV_DONTDUMP); errno != 0 {
			return fmt.Errorf("exemap: madvise(MADV_DONTDUMP): %w", errno)
		}
	}
	return nil
}

// Release unmaps the pages of every range (MADV_DONTNEED) and returns the
// bytes advised. They are clean file pages, still in the page cache: what
// runs next faults back in from it.
func Release(rs []Range) (released int64) {
	for _, r := range rs {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, r.Start, r.End-r.Start, unix.MADV_DONTNEED); errno == 0 {
			released += int64(r.End - r.Start)
		}
	}
	return released
}

// maxMapCount is vm.max_map_count: the most mappings a process may have.
func maxMapCount() (int, error) {
	b, err := os.ReadFile("/proc/sys/vm/max_map_count")
	if err != nil {
		return 0, fmt.Errorf("exemap: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("exemap: vm.max_map_count: %w", err)
	}
	return n, nil
}
