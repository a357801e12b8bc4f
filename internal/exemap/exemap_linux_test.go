package exemap

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestSplitBoundsFaultAround: after Split every read-only mapping of the
// executable is at most chunk bytes, together they cover what they covered
// before, and code unmapped by Release runs again.
func TestSplitBoundsFaultAround(t *testing.T) {
	before, err := Ranges()
	if err != nil || len(before) == 0 {
		t.Fatalf("Ranges: %v, %v", before, err)
	}
	const chunk = 4096
	n, err := Split(chunk)
	if err != nil {
		t.Fatal(err)
	}
	after, err := Ranges()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, after) {
		t.Errorf("ranges before Split %x, after %x", before, after)
	}
	sizes := exeMappingSizes(t)
	if len(sizes) != n {
		t.Errorf("Split reported %d mappings, /proc/self/maps has %d", n, len(sizes))
	}
	for _, s := range sizes {
		if s > chunk {
			t.Fatalf("a mapping of %d bytes after Split(%d)", s, chunk)
		}
	}
	if Release(after) == 0 {
		t.Fatal("Release advised nothing")
	}
	b, err := json.Marshal(map[string][]int{"a": {1, 2}})
	if err != nil || string(b) != `{"a":[1,2]}` {
		t.Fatalf("after Release: %s, %v", b, err)
	}
	if _, err := Split(chunk + 1); err == nil {
		t.Error("Split of a chunk that is not a multiple of the page size: no error")
	}
}

// TestFaultAroundStopsAtTheMapping holds the kernel to what Split relies
// on: a read fault in a file mapping maps pages around it only within its
// mapping (VMA). A file in the page cache, mapped whole and mapped cut into
// pages; one byte read in the middle of each.
func TestFaultAroundStopsAtTheMapping(t *testing.T) {
	const size, page = 1 << 20, 4096
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	resident := func(split bool) int {
		m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_PRIVATE)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(m)
		start := uintptr(unsafe.Pointer(&m[0]))
		if split {
			if err := splitRange(Range{start, start + size}, page); err != nil {
				t.Fatal(err)
			}
		}
		sink += m[size/2+100]
		return rssKB(t, start, start+size)
	}
	whole, cut := resident(false), resident(true)
	t.Logf("one byte read: %d kB resident mapped whole, %d kB cut into pages", whole, cut)
	if cut != page/1024 {
		t.Errorf("cut into pages: %d kB resident after one read, want %d", cut, page/1024)
	}
}

// sink keeps the compiler from dropping a read made for its page fault.
var sink byte

// exeMappingSizes is the size of each read-only mapping of the executable.
func exeMappingSizes(t *testing.T) []int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 6 || f[5] != exe || (f[1] != "r-xp" && f[1] != "r--p") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		s, _ := parseHex([]byte(lo))
		e, _ := parseHex([]byte(hi))
		sizes = append(sizes, int(e-s))
	}
	return sizes
}

// rssKB sums the Rss of the mappings within [lo, hi), from /proc/self/smaps.
func rssKB(t *testing.T, lo, hi uintptr) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in, kb := false, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if addrs, _, ok := strings.Cut(line, " "); ok && strings.Contains(addrs, "-") && !strings.HasSuffix(addrs, ":") {
			s, e, _ := strings.Cut(addrs, "-")
			start, ok1 := parseHex([]byte(s))
			end, ok2 := parseHex([]byte(e))
			if ok1 && ok2 {
				in = start >= lo && end <= hi
				continue
			}
		}
		if v, ok := strings.CutPrefix(line, "Rss:"); ok && in {
			var n int
			for _, c := range strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")) {
				n = n*10 + int(c-'0')
			}
			kb += n
		}
	}
	return kb
}
