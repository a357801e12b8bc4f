package auditstream

import (
	"io"
	"runtime"
	"strings"
	"testing"
)

// allocated returns the bytes f allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestReadBoundsOneArrayElement: an element of an upload array larger
// than MaxRecordBytes (a gzip'd batch inflates a thousandfold) is refused
// once MaxRecordBytes are read, not after the whole element is buffered.
func TestReadBoundsOneArrayElement(t *testing.T) {
	const huge = 4 * MaxRecordBytes
	element := strings.Repeat("a", huge)
	var err error
	n := allocated(func() {
		in := io.MultiReader(strings.NewReader(`[{"decision_id":"`), strings.NewReader(element), strings.NewReader(`"}]`))
		err = Read("bomb.json", in, func(Record, Pos) error { return nil })
	})
	if err == nil || !strings.Contains(err.Error(), "bomb.json[#1]") {
		t.Fatalf("err %v, want one naming bomb.json[#1]", err)
	}
	if n > 6*MaxRecordBytes {
		t.Fatalf("reading a %d-byte element allocated %d bytes, more than 6 × MaxRecordBytes", huge, n)
	}
}
