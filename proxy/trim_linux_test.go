package proxy

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Unmapping the executable's read-only pages loses nothing: code and
// constants used afterwards fault back in from the page cache.
func TestReleaseStartupMemory(t *testing.T) {
	before := rssFileKB(t)
	released := releaseStartupMemory()
	if released == 0 {
		t.Fatal("no read-only mapping of the executable was released")
	}
	after := rssFileKB(t)
	// Code runs again: a JSON round trip walks code and type data.
	b, err := json.Marshal(map[string][]int{"a": {1, 2}})
	if err != nil || string(b) != `{"a":[1,2]}` {
		t.Fatalf("after release: %s, %v", b, err)
	}
	if after >= before {
		t.Errorf("file-backed RSS %d kB before, %d kB after; want less", before, after)
	}
}

func rssFileKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
