package spool

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// mappedRSS is the resident size, in bytes, of this process's mapping of
// path (its Rss line in /proc/self/smaps), or -1 if path is not mapped.
func mappedRSS(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		switch {
		case len(fl) >= 5 && !strings.HasSuffix(fl[0], ":"): // a mapping's header
			in = len(fl) == 6 && fl[5] == path
		case in && len(fl) == 3 && fl[0] == "Rss:":
			kb, err := strconv.ParseInt(fl[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	return -1
}

// TestSpoolMemoryReleasesShippedPages: the active segment is mapped shared
// and every record copied into it makes its page resident in the sidecar
// (VmRSS counts it). Once every consumer has committed past a page, the
// spool gives it back: a consumer that keeps up holds the active segment
// at a few pages, not the megabytes written (bench/README.md, Memory).
func TestSpoolMemoryReleasesShippedPages(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Writer: writer, Consumers: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.m == nil {
		t.Skip("the active segment is not mapped here (no room for its fill)")
	}
	seg := filepath.Join(dir, segName(1))
	const written = 1 << 20
	for i := 0; s.Stats().Bytes < written; i++ {
		if err := s.Append(decision(i)); err != nil {
			t.Fatal(err)
		}
	}
	if rss := mappedRSS(t, seg); rss < written/2 {
		t.Fatalf("after writing %d bytes the mapping of %s holds %d resident: this test cannot see the pages it checks", written, seg, rss)
	}
	// One consumer done is not enough: the other still reads those pages.
	drainLines(t, s, "a")
	if rss := mappedRSS(t, seg); rss < written/2 {
		t.Fatalf("with consumer b behind, %d bytes of %s resident; want its unread pages kept", rss, seg)
	}
	drainLines(t, s, "b")
	// What is left: the page being written and the pages the kernel maps
	// around a fault (fault_around_bytes, 64 KiB).
	const kept = 128 << 10
	if rss := mappedRSS(t, seg); rss > kept {
		t.Fatalf("every consumer committed, and %d bytes of %s still resident; want at most %d", rss, seg, kept)
	}
	// Released pages stay in the page cache: the records are all there.
	s.Close()
	s2, err := Open(dir, Options{Writer: writer, Consumers: []string{"c"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	recs := drain(t, s2, "c")
	if len(recs) == 0 {
		t.Fatal("no records after reopening")
	}
	checkChain(t, recs, 1)
}

// TestSpoolMemoryReleaseStopsAtTheMapping: an active segment can hold
// more than its mapping (reopened under a smaller bound, or after a
// rotation that failed); committing past its end releases the mapped
// pages only, never beyond the mapping.
func TestSpoolMemoryReleaseStopsAtTheMapping(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Writer: writer, Consumers: []string{"c"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; s.Stats().Bytes < 1<<20; i++ {
		if err := s.Append(decision(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	// An odd bound: a segment, and so a mapping, smaller than what the
	// active segment holds, and not page aligned.
	s, err = Open(dir, Options{Writer: writer, Consumers: []string{"c"}, MaxBytes: 1<<20 + 12345})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.m == nil {
		t.Skip("the active segment is not mapped here (no room for its fill)")
	}
	if size := s.Stats().Bytes; size <= int64(len(s.m)) {
		t.Fatalf("the active segment holds %d bytes, its mapping %d: want more than the mapping", size, len(s.m))
	}
	if got := len(drainLines(t, s, "c")); got == 0 {
		t.Fatal("no records read")
	}
	if s.released > int64(len(s.m)) || s.released%int64(os.Getpagesize()) != 0 {
		t.Fatalf("released %d bytes of a %d-byte mapping; want page aligned, within it", s.released, len(s.m))
	}
}
