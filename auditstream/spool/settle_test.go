package spool

import (
	"path/filepath"
	"testing"
)

// settle waits until the rotation goroutine has run every job queued so
// far (the jobs run in order).
func (s *Spool) settle() {
	done := make(chan struct{})
	s.mu.Lock()
	s.enqueueLocked(func() { close(done) })
	s.mu.Unlock()
	<-done
}

// segsWritten lists the segment files on disk once the rotation
// goroutine settled, but for the prepared next one.
func segsWritten(t *testing.T, s *Spool) []string {
	t.Helper()
	s.settle()
	all, err := filepath.Glob(filepath.Join(s.dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range all {
		if s.bg.next == nil || filepath.Base(p) != segName(s.bg.next.n) {
			out = append(out, p)
		}
	}
	return out
}
