package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/auditstream"
)

// TestSpoolSwitchOffTheRequestPath holds the rotation goroutine (a file
// system that takes its time to zero fill, map, fsync writers.json or
// cut a segment) and wants every Append across two segment switches to
// return meanwhile: a decision never waits for a switch's file work
// (before, the Append that filled a segment did all of it under the
// spool's lock, and every other decision of the sidecar waited). Once
// the goroutine runs again, the records are whole, in order, and the
// passed segment goes only after writers.json holds its heads.
func TestSpoolSwitchOffTheRequestPath(t *testing.T) {
	dir := t.TempDir()
	o := Options{Writer: writer, Consumers: []string{"c"}, MaxBytes: 64 << 10} // 8 KiB segments
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	appendedBefore := 0
	for ; ; appendedBefore++ { // half a segment: the next one is asked for
		if err := s.Append(decision(appendedBefore)); err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		half := s.sizes[1] >= s.seg/2
		s.mu.Unlock()
		if half {
			break
		}
	}
	appendedBefore++
	s.settle() // and prepared
	s.mu.Lock()
	prepared := s.bg.next != nil
	s.mu.Unlock()
	if !prepared {
		t.Fatal("no next segment prepared once the active one was half full")
	}
	release := make(chan struct{})
	s.mu.Lock()
	s.enqueueLocked(func() { <-release }) // the slow file system
	s.mu.Unlock()

	appended := make(chan error, 1)
	go func() {
		for i := appendedBefore; i < 150; i++ { // ~27 KiB in all: past two 8 KiB segments
			if err := s.Append(decision(i)); err != nil {
				appended <- err
				return
			}
		}
		appended <- nil
	}()
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("Append waited for the segment switch's file work")
	}
	s.mu.Lock()
	switched := len(s.segs)
	s.mu.Unlock()
	if switched != 2 {
		t.Fatalf("%d segments while the rotation was held: want 2 (the prepared one switched in, no other ready)", switched)
	}
	if _, err := os.Stat(filepath.Join(dir, "writers.json")); err == nil {
		t.Fatal("writers.json written while the rotation goroutine was held: by the Append path")
	}
	// Passed but not deletable yet: writers.json does not hold its heads.
	b, err := s.Read("c", 1000, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit("c", b.Next); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, segName(1))); err != nil {
		t.Fatalf("segment 1 deleted before writers.json held its heads: %v", err)
	}
	close(release)
	s.settle()
	if _, err := os.Stat(filepath.Join(dir, segName(1))); !os.IsNotExist(err) {
		t.Fatalf("segment 1 kept after its heads were saved and every consumer passed it: %v", err)
	}
	var lines []string
	for _, l := range b.Lines {
		lines = append(lines, string(l))
	}
	lines = append(lines, drainLines(t, s, "c")...)
	var recs = make([]string, 0, len(lines))
	for _, l := range lines {
		if !strings.HasPrefix(l, "{") {
			t.Fatalf("line %q", l)
		}
		recs = append(recs, l)
	}
	if len(recs) != 150 {
		t.Fatalf("%d records read, want 150", len(recs))
	}
	s.Close()
	// Reopened: the chain continues (writers.json and the segments agree).
	s, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if seq, _ := s.Head(writer); seq != 150 {
		t.Fatalf("head after reopening: seq %d, want 150", seq)
	}
}

// TestSpoolRecoveryDropsPreparedSegments: a crash leaves the prepared next
// segment (zero filled, never written) after the active one; Open removes
// it, and the active one, its torn line cut, takes the records again.
func TestSpoolRecoveryDropsPreparedSegments(t *testing.T) {
	dir := t.TempDir()
	o := Options{Writer: writer, Consumers: []string{"c"}, MaxBytes: 64 << 10}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; ; n++ { // until the next segment is prepared (half of this one)
		if err := s.Append(decision(n)); err != nil {
			t.Fatal(err)
		}
		s.settle()
		s.mu.Lock()
		prepared := s.bg.next != nil
		s.mu.Unlock()
		if prepared {
			break
		}
	}
	// What a SIGKILL leaves: copies of the files, the mapped active
	// segment with its zero fill and a torn line, the prepared one.
	crash := t.TempDir()
	os.Chmod(crash, 0o700)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == segName(1) {
			end := strings.IndexByte(string(b), 0)
			copy(b[end:], `{"decision_id":"torn`)
		}
		if err := os.WriteFile(filepath.Join(crash, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(crash, segName(2))); err != nil {
		t.Fatalf("no prepared segment to recover from: %v", err)
	}
	r, err := Open(crash, o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Append(decision(n + 1)); err != nil {
		t.Fatal(err)
	}
	got := drain(t, r, "c")
	checkChain(t, got, 1)
	if len(got) != n+2 {
		t.Fatalf("%d records after recovery, want %d", len(got), n+2)
	}
}

// TestSpoolIngestPassesOnWhatItChecked: the server spools a sidecar's
// record as the record it decoded and checked, encoded once, not the
// sender's text: a line with a duplicate key (a receiver that takes the
// first would read another record than the one whose hash was checked)
// or extra whitespace is spooled as the record's own encoding.
func TestSpoolIngestPassesOnWhatItChecked(t *testing.T) {
	c := auditstream.NewChain("spiffe://example.org/ns/web/sa/web#1", 0, "")
	sealed, err := c.SealJSON(decision(1))
	if err != nil {
		t.Fatal(err)
	}
	for name, line := range map[string]string{
		"as sealed":     string(sealed),
		"duplicate key": `{"decision_id":"forged",` + string(sealed[1:]),
		"whitespace":    "{ " + strings.ReplaceAll(string(sealed[1:]), `,"`, `, "`),
	} {
		t.Run(name, func(t *testing.T) {
			s, err := Open(t.TempDir(), Options{Consumers: []string{"c"}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if n, err := s.Ingest([][]byte{[]byte(line)}); err != nil || n != 1 {
				t.Fatalf("Ingest: %d, %v", n, err)
			}
			if got := drainLines(t, s, "c"); len(got) != 1 || got[0] != string(sealed) {
				t.Fatalf("spooled %q, want the record's own encoding %q", got, sealed)
			}
		})
	}
}
