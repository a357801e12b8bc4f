package spool

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/auditstream"
)

const writer = "spiffe://example.org/ns/default/sa/api#1"

func decision(i int) *auditstream.Record {
	return &auditstream.Record{DecisionID: "d" + strconv.Itoa(i), Path: auditstream.PathDecision,
		Result: json.RawMessage("true"), Sigil: auditstream.Meta{Type: auditstream.TypeDecision}}
}

// drain reads every record consumer has not committed and commits them.
func drain(t *testing.T, s *Spool, consumer string) []auditstream.Record {
	t.Helper()
	var out []auditstream.Record
	for _, l := range drainLines(t, s, consumer) {
		var r auditstream.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// checkChain fails unless recs are one writer's whole chain from seq first.
func checkChain(t *testing.T, recs []auditstream.Record, first int64) {
	t.Helper()
	prev := ""
	for i, r := range recs {
		if err := auditstream.Check(r); err != nil {
			t.Fatal(err)
		}
		if r.Sigil.Seq != first+int64(i) {
			t.Fatalf("record %d has seq %d, want %d", i, r.Sigil.Seq, first+int64(i))
		}
		if i > 0 && r.Sigil.Prev != prev {
			t.Fatalf("record seq %d: broken link", r.Sigil.Seq)
		}
		prev = r.Sigil.Hash
	}
}

func TestSpoolCrashRecoveryTruncatesTornLine(t *testing.T) {
	for _, cut := range []int{1, 10, 40} {
		t.Run(strconv.Itoa(cut), func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{Writer: writer, Consumers: []string{"c"}})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				if err := s.Append(decision(i)); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			// A crash in the middle of writing a sixth: part of a line.
			seg := filepath.Join(dir, segName(1))
			b, _ := os.ReadFile(seg)
			line := b[:len(b)/5]
			f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(line[:cut])
			f.Close()

			s, err = Open(dir, Options{Writer: writer, Consumers: []string{"c"}})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Append(decision(6)); err != nil {
				t.Fatal(err)
			}
			got := drain(t, s, "c")
			if len(got) != 6 {
				t.Fatalf("got %d records, want 6", len(got))
			}
			checkChain(t, got, 1)
		})
	}
}

func TestSpoolLimitDropsIntoAGapRecord(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Writer: writer, Consumers: []string{"c"}, MaxBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	full := 0
	for i := range 100 {
		if err := s.Append(decision(i)); errors.Is(err, ErrFull) {
			full++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if full == 0 {
		t.Fatal("no record was refused past the limit")
	}
	st := s.Stats()
	if st.Dropped != int64(full) || st.Bytes > 8<<10 {
		t.Fatalf("stats %+v after %d refused", st, full)
	}
	got := drain(t, s, "c")
	if err := s.Append(decision(1000)); err != nil {
		t.Fatal(err)
	}
	got = append(got, drain(t, s, "c")...)
	checkChain(t, got, 1)
	gap := got[len(got)-2]
	if gap.Sigil.Type != auditstream.TypeGap || gap.Sigil.Lost != int64(full) {
		t.Fatalf("record before the first after the drop is %+v, want a gap of %d", gap.Sigil, full)
	}
	if got[len(got)-1].DecisionID != "d1000" {
		t.Fatalf("last record %s", got[len(got)-1].DecisionID)
	}
}

func TestSpoolCursorPersistsAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	o := Options{Writer: writer, Consumers: []string{"a", "b"}, MaxBytes: 40 << 10}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		if err := s.Append(decision(i)); err != nil {
			t.Fatal(err)
		}
	}
	a := drain(t, s, "a")
	b, err := s.Read("b", 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit("b", b.Next); err != nil {
		t.Fatal(err)
	}
	b2, _ := s.Read("b", 5, 1<<20) // read, never committed: read again after the restart
	if len(b2.Lines) != 5 {
		t.Fatalf("read %d", len(b2.Lines))
	}
	s.Close()

	s, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := drain(t, s, "a"); len(got) != 0 {
		t.Fatalf("consumer a got %d records again", len(got))
	}
	rest := drain(t, s, "b")
	if len(a) != 60 || len(rest) != 50 || rest[0].Sigil.Seq != 11 {
		t.Fatalf("a %d, b after restart %d", len(a), len(rest))
	}
	if segs := segsWritten(t, s); len(segs) != 1 {
		t.Fatalf("%d segments left after every consumer passed them", len(segs))
	}
	// The chain goes on after a restart whose segments were all deleted.
	s.Close()
	s, _ = Open(dir, o)
	if err := s.Append(decision(99)); err != nil {
		t.Fatal(err)
	}
	last := drain(t, s, "a")
	if len(last) != 1 || last[0].Sigil.Seq != 61 || last[0].Sigil.Prev != a[59].Sigil.Hash {
		t.Fatalf("after restart: %+v", last)
	}
}

func TestSpoolIngestDropsDuplicates(t *testing.T) {
	src, _ := Open(t.TempDir(), Options{Writer: writer, Consumers: []string{"up"}})
	for i := range 6 {
		src.Append(decision(i))
	}
	b, _ := src.Read("up", 100, 1<<20)
	dir := t.TempDir()
	o := Options{Writer: "spiffe://example.org/sigil/server#1", Consumers: []string{"x"}}
	dst, _ := Open(dir, o)
	if n, err := dst.Ingest(b.Lines[:4]); err != nil || n != 4 {
		t.Fatalf("ingest: %d %v", n, err)
	}
	dst.Close()
	dst, _ = Open(dir, o)
	if n, err := dst.Ingest(b.Lines); err != nil || n != 2 {
		t.Fatalf("re-sent batch: %d new, %v; want 2", n, err)
	}
	got := drain(t, dst, "x")
	checkChain(t, got, 1)
	if len(got) != 6 {
		t.Fatalf("%d records", len(got))
	}
	tampered := []byte(string(b.Lines[5])[:len(b.Lines[5])-3] + `x"}}`)
	if _, err := dst.Ingest([][]byte{tampered}); err == nil {
		t.Fatal("a record whose hash does not match was ingested")
	}
	// Nobody may write into the server's own chain.
	own, _ := Open(t.TempDir(), o)
	own.Append(decision(1))
	ob, _ := own.Read("x", 1, 1<<20)
	if _, err := dst.Ingest(ob.Lines); err == nil {
		t.Fatal("a record of the spool's own writer was ingested")
	}
}

// Ingest faces the agents (records from the network): whatever it is
// given, it never panics, never writes a line that is not one JSON
// record, and a second Open reads the spool back.
func FuzzSpoolIngest(f *testing.F) {
	src, _ := Open(f.TempDir(), Options{Writer: writer, Consumers: []string{"up"}})
	src.Append(decision(1))
	b, _ := src.Read("up", 1, 1<<20)
	f.Add(b.Lines[0])
	f.Add([]byte(`{"sigil":{"writer":"w","seq":1}}`))
	f.Add([]byte("{\n}"))
	f.Fuzz(func(t *testing.T, line []byte) {
		dir := t.TempDir()
		s, err := Open(dir, Options{Consumers: []string{"x"}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Ingest([][]byte{line}); err != nil {
			return
		}
		got, err := s.Read("x", 10, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range got.Lines {
			var r auditstream.Record
			if err := json.Unmarshal(l, &r); err != nil || auditstream.Check(r) != nil {
				t.Fatalf("spooled %q", l)
			}
		}
		s.Close()
		again, err := Open(dir, Options{Consumers: []string{"x"}})
		if err != nil {
			t.Fatal(err)
		}
		again.Close()
	})
}

// A restart right after a segment switch, once every consumer passed the
// full segment (deleted): the chain head comes from writers.json alone,
// and must be the last record written, not the one before.
func TestSpoolChainContinuesAfterSwitchAndDeletion(t *testing.T) {
	dir := t.TempDir()
	o := Options{Writer: writer, Consumers: []string{"c"}, MaxBytes: 32 << 10}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		s.settle() // a switch needs its prepared segment
		if err := s.Append(decision(i)); err != nil {
			t.Fatal(err)
		}
		if s.Stats().Bytes == 0 || len(s.segs) > 1 && s.sizes[s.segs[len(s.segs)-1]] == 0 {
			break // the record just written filled a segment: a new, empty one is active
		}
	}
	got := drain(t, s, "c")
	if segs := segsWritten(t, s); len(segs) != 1 {
		t.Fatalf("%d segments", len(segs))
	}
	s.Close()
	s, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(decision(-1)); err != nil {
		t.Fatal(err)
	}
	next := drain(t, s, "c")
	checkChain(t, append(got, next...), 1)
}

// Two processes appending to one spool would fork its chain: the second
// Open is refused, naming the directory, until the first closes.
func TestSpoolRefusesASecondOpener(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(dir, Options{Writer: writer})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{Writer: writer}); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open: %v", err)
	}
	a.Close()
	b, err := Open(dir, Options{Writer: writer})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
}

// TestSpoolReadFromMemoryIsReadFromFiles reads the same records from the
// mapped active segment (a consumer that keeps up) and from the segment
// files (one that reads after a restart), over several segments: the
// same lines, and a line a consumer appends to changes neither the next
// line nor what is read next.
func TestSpoolReadFromMemoryIsReadFromFiles(t *testing.T) {
	dir := t.TempDir()
	o := Options{Writer: writer, Consumers: []string{"mem", "file"}, MaxBytes: 64 << 10}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	var mem []string
	for i := range 60 {
		s.settle() // a switch needs its prepared segment
		if err := s.Append(decision(i)); err != nil {
			t.Fatal(err)
		}
		if i%7 != 0 {
			continue
		}
		b, err := s.Read("mem", 5, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range b.Lines {
			_ = append(l, 'x') // must not reach the next line, nor the spool's copy
		}
		var first []string
		for _, l := range b.Lines {
			first = append(first, string(l))
		}
		// Read again from the same cursor, as a failed delivery is.
		if b, err = s.Read("mem", 5, 1<<20); err != nil {
			t.Fatal(err)
		}
		for i, l := range b.Lines {
			if i >= len(first) || string(l) != first[i] {
				t.Fatalf("read again: line %d %q, first read %q", i, l, first)
			}
			mem = append(mem, string(l))
		}
		if err := s.Commit("mem", b.Next); err != nil {
			t.Fatal(err)
		}
	}
	mem = append(mem, drainLines(t, s, "mem")...)
	if len(s.segs) < 3 {
		t.Fatalf("%d segments: the test wants several", len(s.segs))
	}
	s.Close()
	s, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	file := drainLines(t, s, "file")
	if strings.Join(mem, "\n") != strings.Join(file, "\n") {
		t.Fatalf("from memory %d lines, from files %d, or they differ", len(mem), len(file))
	}
	if len(file) != 60 {
		t.Fatalf("%d lines, want 60", len(file))
	}
}

// drainLines reads every line consumer has not committed and commits them.
func drainLines(t *testing.T, s *Spool, consumer string) []string {
	t.Helper()
	s.settle()
	var out []string
	for {
		b, err := s.Read(consumer, 7, 1<<10)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Lines) == 0 {
			return out
		}
		for _, l := range b.Lines {
			out = append(out, string(l))
			_ = append(l, 'x')
		}
		if err := s.Commit(consumer, b.Next); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSpoolRecoveryAfterKillWithMappedSegment opens what a SIGKILL leaves
// of a spool whose active segment is mapped (a copy of its files while it
// is open: the page cache's content): the zero fill after the lines, and
// a line torn in it, are cut off, and the chain goes on.
func TestSpoolRecoveryAfterKillWithMappedSegment(t *testing.T) {
	for _, cut := range []int{0, 1, 40} {
		t.Run(strconv.Itoa(cut), func(t *testing.T) {
			live := t.TempDir()
			s, err := Open(live, Options{Writer: writer, Consumers: []string{"c"}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i := range 5 {
				if err := s.Append(decision(i)); err != nil {
					t.Fatal(err)
				}
			}
			dir := t.TempDir()
			ents, _ := os.ReadDir(live)
			for _, e := range ents {
				b, err := os.ReadFile(filepath.Join(live, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			seg := filepath.Join(dir, segName(1))
			b, _ := os.ReadFile(seg)
			size := s.Stats().Bytes
			if s.m != nil && int64(len(b)) != s.mapLen() {
				t.Fatalf("mapped segment is %d bytes on disk, want its mapping's %d", len(b), s.mapLen())
			}
			f, _ := os.OpenFile(seg, os.O_WRONLY, 0)
			f.WriteAt(b[:cut], size) // a crash in the middle of copying a sixth
			f.Close()

			s2, err := Open(dir, Options{Writer: writer, Consumers: []string{"c"}})
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			if err := s2.Append(decision(6)); err != nil {
				t.Fatal(err)
			}
			got := drain(t, s2, "c")
			if len(got) != 6 {
				t.Fatalf("got %d records, want 6", len(got))
			}
			checkChain(t, got, 1)
		})
	}
}

// TestSpoolUnreadableCursorReadsFromStart: a cursor file left empty or
// garbled (cursors are not fsynced; a power loss can do this) does not
// stop the spool from opening: that consumer reads again from the start,
// so records are re-sent, never skipped.
func TestSpoolUnreadableCursorReadsFromStart(t *testing.T) {
	for _, content := range []string{"", "{\"seg\":", "\x00\x00"} {
		dir := t.TempDir()
		o := Options{Writer: writer, Consumers: []string{"c"}}
		s, err := Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := s.Append(decision(i)); err != nil {
				t.Fatal(err)
			}
		}
		if got := drain(t, s, "c"); len(got) != 3 {
			t.Fatalf("got %d records, want 3", len(got))
		}
		s.Close()
		if err := os.WriteFile(filepath.Join(dir, "cursor.c"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err = Open(dir, o)
		if err != nil {
			t.Fatalf("cursor %q: %v", content, err)
		}
		if got := drain(t, s, "c"); len(got) != 3 {
			t.Fatalf("cursor %q: read %d records again, want 3", content, len(got))
		}
		s.Close()
	}
}

// TestSpoolLineLongerThanTheMapping writes records that do not fit in
// the active segment's mapping (written with pwrite(2) past it) between
// ones that do, and reads them back whole, before and after a restart.
func TestSpoolLineLongerThanTheMapping(t *testing.T) {
	dir := t.TempDir()
	o := Options{Writer: writer, Consumers: []string{"c", "later"}, MaxBytes: 8 << 20}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		r := decision(i)
		if i%2 == 1 {
			r.Error = strings.Repeat("e", mapSlack+int(s.seg)/2)
		}
		if err := s.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	got := drain(t, s, "c")
	if len(got) != 6 {
		t.Fatalf("got %d records, want 6", len(got))
	}
	checkChain(t, got, 1)
	s.Close()
	s, err = Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Append(decision(6)); err != nil {
		t.Fatal(err)
	}
	got = drain(t, s, "later")
	if len(got) != 7 {
		t.Fatalf("after restart got %d records, want 7", len(got))
	}
	checkChain(t, got, 1)
}
