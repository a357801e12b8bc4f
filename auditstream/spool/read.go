package spool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Wake returns a channel closed at the next append.
func (s *Spool) Wake() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = true
	return s.wake
}

// Read returns up to maxRecords whole lines (and about maxBytes, at least
// one line) from consumer's cursor; an empty batch when it is caught up.
// The lines are valid until the consumer's next Read (a consumer has one
// reader), which reuses their buffer.
func (s *Spool) Read(consumer string, maxRecords, maxBytes int) (Batch, error) {
	s.mu.Lock()
	cur, ok := s.cursors[consumer]
	buf := s.reads[consumer][:0]
	segs := append([]uint64(nil), s.segs...)
	sizes := make(map[uint64]int64, len(segs))
	for _, n := range segs {
		sizes[n] = s.sizes[n]
	}
	s.mu.Unlock()
	if !ok {
		return Batch{}, fmt.Errorf("spool: unknown consumer %q", consumer)
	}
	var out Batch
	size := 0
	for _, n := range segs {
		if n < cur.Seg {
			continue
		}
		if n > cur.Seg {
			cur = Cursor{Seg: n}
		}
		end := sizes[n]
		// In chunks of readChunk: a batch reads about what it takes, not
		// its whole byte budget.
		for cur.Off < end {
			want := min(end-cur.Off, int64(max(maxBytes-size, 0)), readChunk)
			start := len(buf)
			var mapped bool
			buf, mapped = s.copyMapped(buf, n, cur.Off, want, end)
			if !mapped {
				var err error
				if buf, err = readAt(buf, filepath.Join(s.dir, segName(n)), cur.Off, want, end); err != nil {
					return Batch{}, err
				}
			}
			b := buf[start:]
			for line := range bytes.Lines(b) {
				if len(out.Lines) == maxRecords || len(out.Lines) > 0 && size+len(line) > maxBytes {
					out.Next = cur
					s.keepReadBuf(consumer, buf)
					return out, nil
				}
				// Capacity cut to the line: an append to it must not
				// write over the next line in the buffer.
				l := bytes.TrimSuffix(line, []byte{'\n'})
				out.Lines = append(out.Lines, l[:len(l):len(l)])
				size += len(line)
				cur.Off += int64(len(line))
			}
		}
	}
	out.Next = cur
	s.keepReadBuf(consumer, buf)
	return out, nil
}

// keepReadBuf keeps consumer's read buffer for its next Read.
func (s *Spool) keepReadBuf(consumer string, buf []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.cursors[consumer]; ok && cap(buf) <= 2*maxReadBuf {
		s.reads[consumer] = buf
	}
}

// maxReadBuf is about the most a consumer's read buffer holds (a batch's
// byte budget, export.MaxBatchBytes, and a chunk past it).
const maxReadBuf = 1<<20 + readChunk

// copyMapped appends to buf, from segment n's mapping, at least want bytes
// from off and up to the end of a whole line (not past end), and reports
// whether it could: n is still the mapped active segment.
//
// On the hot path of a consumer that keeps up (the shipper, at 1000
// records a second): the lines just written, copied from the page cache
// into the consumer's reused buffer, without a read(2) or a buffer per
// chunk (bench/README.md, Cost of audit export). Under s.mu: the mapping
// is unmapped only under it.
func (s *Spool) copyMapped(buf []byte, n uint64, off, want, end int64) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil || n != s.segs[len(s.segs)-1] || end > int64(len(s.m)) {
		return buf, false
	}
	b := s.m[off:end]
	i := bytes.IndexByte(b[min(max(want, 1), int64(len(b)))-1:], '\n')
	if i < 0 {
		return buf, false // no whole line: readAt says why
	}
	return append(buf, b[:min(max(want, 1), int64(len(b)))+int64(i)]...), true
}

// readAt appends to buf at least want bytes from off and up to the end of
// a whole line (but not past end).
func readAt(buf []byte, path string, off, want, end int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	n := max(want, 1)
	for {
		n = min(n, end-off)
		b := make([]byte, n)
		if _, err := f.ReadAt(b, off); err != nil {
			return buf, fmt.Errorf("spool: reading %s: %w", path, err)
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			return append(buf, b[:i+1]...), nil
		}
		if off+n >= end {
			return buf, fmt.Errorf("spool: %s: a line without its end at offset %d", path, off)
		}
		n *= 2
	}
}

// Commit persists consumer's cursor (atomically: a crash of the process
// leaves the old one or the new) and deletes the segments every consumer
// has passed.
func (s *Spool) Commit(consumer string, c Cursor) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := writeCursor(filepath.Join(s.dir, "cursor."+consumer), b); err != nil {
		return fmt.Errorf("spool: cursor of %s: %w", consumer, err)
	}
	s.mu.Lock()
	if _, ok := s.cursors[consumer]; !ok {
		s.mu.Unlock()
		return fmt.Errorf("spool: unknown consumer %q", consumer)
	}
	s.cursors[consumer] = c
	gone := s.passedLocked()
	s.releaseReadLocked()
	s.mu.Unlock()
	return s.remove(gone)
}

// passedLocked takes the segments every consumer has passed off the
// spool's list, and returns them to be removed (remove) once the lock is
// released: unlinking a segment of megabytes frees its blocks, which
// Append must not wait for. A segment goes only once a writers.json
// holding the heads of its records is on disk (rotation).
func (s *Spool) passedLocked() []uint64 {
	active := s.segs[len(s.segs)-1]
	low := active
	for _, cur := range s.cursors {
		seg := cur.Seg
		if seg != active && cur.Off >= s.sizes[seg] {
			seg++ // at the end of a full segment: passed it
		}
		low = min(low, seg)
	}
	var gone []uint64
	for len(s.segs) > 1 && s.segs[0] < low && s.segs[0] <= s.bg.headsSaved {
		gone = append(gone, s.segs[0])
		s.total -= s.sizes[s.segs[0]]
		delete(s.sizes, s.segs[0])
		s.segs = s.segs[1:]
	}
	return gone
}

// remove deletes the segments passedLocked took off the list. One that
// cannot be is left on disk, where the next Open finds it before every
// cursor and deletes it at the next Commit.
func (s *Spool) remove(segs []uint64) error {
	var errs []error
	for _, n := range segs {
		if err := os.Remove(filepath.Join(s.dir, segName(n))); err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("spool: %w", err))
		}
	}
	return errors.Join(errs...)
}

// releaseReadLocked gives back the pages at the start of the active
// segment's mapping that every consumer has committed past. Each record
// copied into the mapping leaves its page resident in this process (a
// sidecar's VmRSS counted up to the whole 8 MiB segment); once shipped,
// nothing reads those pages through the mapping again. Durability is
// unchanged: for a shared file mapping MADV_DONTNEED only drops this
// process's page table entries, and the dirty pages stay in the page
// cache, written back as write(2)'s are; a later read faults them back
// from there.
func (s *Spool) releaseReadLocked() {
	if s.m == nil {
		return
	}
	active := s.segs[len(s.segs)-1]
	low := s.sizes[active]
	for _, c := range s.cursors {
		if c.Seg < active {
			return // still reading an older segment, then all of this one
		}
		low = min(low, c.Off)
	}
	// Within the mapping: a segment can hold more than is mapped (a line
	// past it, reopened under a smaller bound).
	end := min(low, int64(len(s.m))) &^ int64(os.Getpagesize()-1)
	if end <= s.released {
		return
	}
	if releaseMapped(s.m[s.released:end]) == nil {
		s.released = end
	}
}

// writeCursor replaces the cursor file at path with b: a temporary file
// renamed into place, without fsync(2). As durable as the records
// themselves (the page cache: a SIGKILL leaves the old cursor or the
// new), and the fsync it spares, a journal commit that also flushes the
// segments' dirty pages, cost a sidecar about 1.7 ms of CPU per batch
// (bench/README.md, Cost of audit export). A cursor a power loss left
// unreadable is read as the spool's start (recover): records are sent
// again, never lost, and the server drops the copies.
func writeCursor(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Stats returns the spool's counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Bytes: s.bytesLocked(), Dropped: s.dropped, Appended: s.appended, Lag: map[string]int64{}}
	for name, c := range s.cursors {
		var lag int64
		for _, n := range s.segs {
			if n >= c.Seg {
				lag += s.sizes[n]
			}
		}
		st.Lag[name] = max(lag-c.Off, 0)
	}
	return st
}

// Wait blocks until something is appended after wake was taken (Wake),
// or ctx is done; it reports whether something was.
func Wait(ctx context.Context, wake <-chan struct{}) bool {
	select {
	case <-wake:
		return true
	case <-ctx.Done():
		return false
	}
}
