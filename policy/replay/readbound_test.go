package replay

import (
	"io"
	"runtime"
	"strings"
	"testing"
)

// TestReadBoundsOneArrayElement: an element of an upload array longer
// than MaxLineBytes (a gzip'd batch inflates a thousandfold) is skipped,
// named, once MaxLineBytes are read, not after the whole element is
// buffered; as the lines of a decision log are.
func TestReadBoundsOneArrayElement(t *testing.T) {
	const huge = 8 * MaxLineBytes
	element := strings.Repeat("a", huge)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	in := io.MultiReader(strings.NewReader(`[{"decision_id":"`), strings.NewReader(element), strings.NewReader(`"}]`))
	skips, err := Read(in, "bomb.json", func(Recorded) error { return nil })
	runtime.ReadMemStats(&after)
	if err == nil || len(skips) != 1 || skips[0].Where != "bomb.json:[0]" || !strings.Contains(skips[0].Reason, "longer than") {
		t.Fatalf("skips %v, err %v; want bomb.json:[0] skipped as too long", skips, err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 6*MaxLineBytes {
		t.Fatalf("reading a %d-byte element allocated %d bytes, more than 6 × MaxLineBytes", huge, n)
	}
}
