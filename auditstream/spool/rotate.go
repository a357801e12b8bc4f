package spool

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/sigil-mesh/sigil/atomicfile"
)

// rotation is the half of a segment switch that touches the file system,
// done by one goroutine of the spool so that no Append waits for it.
//
// At saturation a sidecar fills a segment (8 MiB) every second or two;
// the switch used to run in the Append that filled it, under the spool's
// lock: writers.json written and fsynced, the next segment zero filled to
// its size (8 MiB of pwrite(2)) and mapped, the full one unmapped and
// cut. That held every decision of the sidecar for tens of milliseconds
// each time, the p99 of a loaded pair (bench/README.md, Cost of audit
// export). Now the next segment is prepared ahead, the switch under the
// lock only swaps it in, and the rest follows in the background, in
// order:
//
//   - the next segment is asked for once the active one is half full
//     (writeLocked), so an idle spool holds one segment on disk, and a
//     saturated sidecar's goroutine has about half a second to make it;
//   - writers.json (each writer's head as of the switch) is written after
//     the switch; Commit deletes a segment only once a writers.json that
//     covers it is on disk (headsSaved), so a chain head is never held by
//     deleted segments alone;
//   - the full segment is unmapped and cut to its lines after the switch
//     (until then Read reads it from the file, to its lines' end);
//   - a prepared segment nothing was written to is removed at Close; one
//     a crash left behind is removed by Open (dropPrepared).
//
// Without a prepared segment (the goroutine is behind, or could not
// create one) the full segment stays active and takes the next records,
// past its mapping with pwrite(2): as durable, one system call a record.
type rotation struct {
	// The fields are under Spool.mu.
	jobs      []func()
	next      *prepared // the segment after the active one, ready
	preparing bool      // a prepare job is queued or running
	stop      bool      // Close began: no new preparation
	// headsSaved: writers.json holds every writer's head as of the end
	// of this segment (and every one before it).
	headsSaved uint64

	signal chan struct{} // capacity 1: jobs are queued
	done   chan struct{} // closed when the goroutine returned
}

// prepared is a segment made ready to be the active one.
type prepared struct {
	n uint64
	f *os.File
	m []byte
}

// startRotation saves the heads of the segments recovered (a crash may
// have come before their writers.json was written) and starts the
// goroutine.
func (s *Spool) startRotation() error {
	s.bg.signal = make(chan struct{}, 1)
	s.bg.done = make(chan struct{})
	if len(s.segs) > 1 {
		if err := s.saveHeads(s.writers); err != nil {
			return err
		}
		s.bg.headsSaved = s.segs[len(s.segs)-2]
	}
	go s.rotationLoop()
	return nil
}

// saveHeads writes writers.json.
func (s *Spool) saveHeads(heads map[string]head) error {
	b, err := json.Marshal(heads)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(s.dir, "writers.json"), b, 0o600); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// rotationLoop runs the queued jobs in order until stopRotation.
func (s *Spool) rotationLoop() {
	defer close(s.bg.done)
	for range s.bg.signal {
		for {
			s.mu.Lock()
			if len(s.bg.jobs) == 0 {
				stop := s.bg.stop
				s.mu.Unlock()
				if stop {
					return
				}
				break
			}
			job := s.bg.jobs[0]
			s.bg.jobs = s.bg.jobs[1:]
			s.mu.Unlock()
			job()
		}
	}
}

// enqueueLocked queues job for the rotation goroutine; it never blocks.
func (s *Spool) enqueueLocked(job func()) {
	s.bg.jobs = append(s.bg.jobs, job)
	select {
	case s.bg.signal <- struct{}{}:
	default: // already signalled
	}
}

// stopRotation runs the jobs queued and stops the goroutine, then removes
// a prepared segment nothing was written to.
func (s *Spool) stopRotation() error {
	if s.bg.done == nil {
		return nil // never started (Open failed first)
	}
	s.mu.Lock()
	s.bg.stop = true
	s.enqueueLocked(func() {})
	s.mu.Unlock()
	<-s.bg.done
	s.mu.Lock()
	nx := s.bg.next
	s.bg.next = nil
	s.mu.Unlock()
	if nx == nil {
		return nil
	}
	return discardPrepared(s.dir, nx)
}

// requestNextLocked queues the preparation of the segment after the
// active one, unless it is ready or under way.
func (s *Spool) requestNextLocked() {
	if s.bg.next != nil || s.bg.preparing || s.bg.stop {
		return
	}
	n := s.segs[len(s.segs)-1] + 1
	s.bg.preparing = true
	s.enqueueLocked(func() { s.prepare(n) })
}

// prepare creates segment n, zero filled and mapped, to be the next
// active one. A failure leaves nothing prepared: the next write past the
// active segment's size asks again.
func (s *Spool) prepare(n uint64) {
	f, m, err := s.openActive(n, 0)
	s.mu.Lock()
	s.bg.preparing = false
	if err != nil {
		s.mu.Unlock()
		return
	}
	nx := &prepared{n: n, f: f, m: m}
	if s.bg.stop || s.segs[len(s.segs)-1]+1 != n {
		s.mu.Unlock()
		_ = discardPrepared(s.dir, nx)
		return
	}
	s.bg.next = nx
	s.mu.Unlock()
}

// discardPrepared removes a prepared segment nothing was written to.
func discardPrepared(dir string, nx *prepared) error {
	var err error
	if nx.m != nil {
		err = unmapSegment(nx.m)
	}
	nx.f.Close()
	if rerr := os.Remove(filepath.Join(dir, segName(nx.n))); rerr != nil && err == nil {
		err = fmt.Errorf("spool: %w", rerr)
	}
	return err
}

// rotateLocked switches to the prepared segment, if there is one, and
// leaves the file work to the rotation goroutine (see rotation).
func (s *Spool) rotateLocked() {
	nx := s.bg.next
	if nx == nil {
		s.requestNextLocked()
		return
	}
	// The heads as of the switch, copied: Append goes on changing s.writers.
	heads := make(map[string]head, len(s.writers))
	for w, h := range s.writers {
		heads[w] = h
	}
	full := s.segs[len(s.segs)-1]
	f, m, size := s.f, s.m, s.sizes[full]
	s.bg.next = nil
	s.sizes[nx.n] = 0
	s.segs = append(s.segs, nx.n)
	s.f, s.m, s.released = nx.f, nx.m, 0
	s.enqueueLocked(func() {
		if s.saveHeads(heads) == nil {
			// Segments every consumer passed while their heads were
			// unsaved go now, not at the next Commit.
			s.mu.Lock()
			s.bg.headsSaved = max(s.bg.headsSaved, full)
			gone := s.passedLocked()
			s.mu.Unlock()
			_ = s.remove(gone)
		}
		// A failure to cut the zero fill leaves it to Open, which cuts a
		// zero fill off any segment.
		_ = s.closeActive(f, m, size)
	})
}

// dropPrepared removes, from the end of the segments listed, those that
// hold no line: segments prepared (zero filled) but never written to,
// left by a crash. The last one with a line is the active segment again.
func (s *Spool) dropPrepared() error {
	for len(s.segs) > 1 {
		n := s.segs[len(s.segs)-1]
		path := filepath.Join(s.dir, segName(n))
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		var first [1]byte
		_, err = io.ReadFull(f, first[:])
		f.Close()
		if err == nil && first[0] != 0 {
			return nil
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("spool: %w", err)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		s.segs = s.segs[:len(s.segs)-1]
	}
	return nil
}

// makeRoomLocked is the spool-full path of Append and Ingest: a full
// active segment that every consumer has passed is switched and deleted
// now, the file work done here (a spool at its bound is rare, and this
// path runs once per segment), so that a spool whose consumers caught up
// takes records again even if its segment switch was behind. It reports
// whether n more bytes now fit.
func (s *Spool) makeRoomLocked(n int) bool {
	full := s.segs[len(s.segs)-1]
	if s.sizes[full] < s.seg {
		return false
	}
	if s.bg.next == nil {
		if s.bg.preparing {
			return false // it is making full+1: the next record tries again
		}
		f, m, err := s.openActive(full+1, 0)
		if err != nil {
			return false
		}
		s.bg.next = &prepared{n: full + 1, f: f, m: m}
	}
	s.rotateLocked()
	if s.saveHeads(s.writers) == nil {
		s.bg.headsSaved = max(s.bg.headsSaved, full)
	}
	_ = s.remove(s.passedLocked())
	return s.bytesLocked()+int64(n) <= s.max
}
