// Package spool is the bounded on-disk buffer (a write-ahead log) in front
// of every audit-stream exporter: records are appended to segment files
// before anything is sent, each consumer (an exporter, or a sidecar's
// shipper to its agent) reads from its own cursor and commits it once the
// receiver has the batch, and a segment is deleted once every consumer has
// passed it.
//
// Durability: Append and Ingest return once whole JSON lines are in the
// kernel's page cache, so a record survives SIGKILL of the process, not a
// power loss (the spool does not fsync per record; the CA's own trail,
// package audit, does). On Linux the active segment is filled with zeros
// to its size (plus a slack) and mapped shared, and a record is copied
// into the mapping: the same page cache write(2) fills, without a system
// call per decision (bench/README.md, Cost of audit export); a segment is
// cut to its lines when it stops being active. Elsewhere, and for a line
// past the mapping, segments are written with pwrite(2). A crash in the
// middle of a write leaves at most one torn last line (and the zero
// fill), which Open truncates; the chain continues from the last whole
// record. Pages of the mapping that every consumer has committed past
// are dropped from the process's resident set (MADV_DONTNEED), not from
// the page cache: durability is the same.
//
// Bound: past Options.MaxBytes on disk new records are dropped and
// counted (Stats.Dropped). A writer's own records (Append) are never lost
// silently: the next record that fits is preceded by a TypeGap record
// whose Lost is the count, sealed into the writer's chain like any
// other. Records of other writers (Ingest, on the server) are refused with
// ErrFull instead, so their sender keeps them and its own spool records
// the gap if it fills.
//
// Layout of the directory (0700, files 0600): NNNNNNNNNNNNNNNNNNNN.seg
// segments of JSON lines; cursor.<consumer> ({"seg":N,"off":BYTES}),
// replaced atomically; writers.json, the last seq and hash of each writer
// as of the last segment switch (segments holding them may be gone), so a
// writer's chain and the server's de-duplication survive restarts.
package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sigil-mesh/sigil/atomicfile"
	"github.com/sigil-mesh/sigil/auditstream"
)

// Defaults.
const (
	// DefaultMaxBytes bounds a spool on disk when Options.MaxBytes is 0.
	DefaultMaxBytes = 64 << 20
	// minSegmentBytes and maxSegmentBytes bound a segment's size
	// (MaxBytes/8 between them).
	minSegmentBytes = 4 << 10
	maxSegmentBytes = 8 << 20
	// mapSlack is how far past the segment size its mapping reaches, so
	// the line that fills a segment is copied too (a longer one is
	// written with pwrite(2)). The active segment holds its size plus
	// this on disk.
	mapSlack = 64 << 10
)

// maxKeptBuf bounds the encoding buffer Append keeps for the next record.
const maxKeptBuf = 64 << 10

// readChunk is how much Read reads at once (more for a longer line).
const readChunk = 64 << 10

// ErrFull means Ingest could not take a batch within the spool's bound;
// nothing of it was written. The sender keeps it and retries.
var ErrFull = errors.New("spool: full")

// Options configure a spool.
type Options struct {
	// MaxBytes bounds the segments on disk (DefaultMaxBytes when 0).
	MaxBytes int64
	// Consumers name the readers, each with its own cursor. A cursor file
	// of a consumer not named is removed (that exporter was unconfigured).
	Consumers []string
	// Writer names the chain Append seals records into (the sidecar's or
	// the server's SPIFFE ID with an instance suffix); "" means Append is
	// refused (a spool that only ingests).
	Writer string
	// Now is the clock for gap records (time.Now when nil).
	Now func() time.Time
}

// Cursor is a consumer's place: a segment and a byte offset in it.
type Cursor struct {
	Seg uint64 `json:"seg"`
	Off int64  `json:"off"`
}

// Batch is what Read returns: whole JSON lines (without their newline) and
// the cursor after them, to Commit once they were delivered.
type Batch struct {
	Lines [][]byte
	Next  Cursor
}

// Stats are a spool's counters, for metrics.
type Stats struct {
	// Bytes on disk in segments.
	Bytes int64
	// Dropped records since Open (spool full or a write failed).
	Dropped int64
	// Appended records since Open (own and ingested).
	Appended int64
	// Lag is, per consumer, the bytes written but not yet committed.
	Lag map[string]int64
}

// head is a writer's last record.
type head struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

// Spool is one spool directory. It is safe for concurrent use.
type Spool struct {
	dir string
	max int64
	seg int64 // segment size at which a new one is started
	now func() time.Time

	lock *os.File // holds the directory's flock while open

	mu       sync.Mutex
	segs     []uint64         // segment numbers on disk, ascending; the last is active
	sizes    map[uint64]int64 // bytes of each
	total    int64            // the sum of sizes (read once per append)
	f        *os.File         // the active segment
	m        []byte           // f mapped shared (mapLen bytes); nil: written with pwrite(2)
	released int64            // bytes at m's start given back (releaseReadLocked), page aligned
	cursors  map[string]Cursor
	writers  map[string]head
	chain    *auditstream.Chain // nil without Options.Writer
	lost     int64              // own records dropped since the last gap record
	dropped  int64
	appended int64
	buf      []byte // Append's encoding buffer, reused
	// reads holds each consumer's read buffer, reused by its next Read.
	reads map[string][]byte
	wake  chan struct{} // closed and replaced at the next append once armed
	armed bool          // someone took wake (Wake) since it was last closed
	// The segment switch's file work, off the request path (rotate.go).
	bg rotation
}

// Open opens (or creates) the spool in dir and recovers it: a torn last
// line is truncated, the chain of Options.Writer continues after its last
// whole record, and each consumer resumes at its committed cursor.
func Open(dir string, o Options) (*Spool, error) {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxBytes < 0 {
		return nil, fmt.Errorf("spool: %s: negative size limit %d", dir, o.MaxBytes)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := privateDir(dir); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		// Two processes appending to one chain would fork it.
		return nil, fmt.Errorf("spool: %s is in use by another process", dir)
	}
	s := &Spool{dir: dir, lock: lock, max: o.MaxBytes, seg: min(max(o.MaxBytes/8, minSegmentBytes), maxSegmentBytes), now: o.Now,
		sizes: map[uint64]int64{}, cursors: map[string]Cursor{}, reads: map[string][]byte{}, writers: map[string]head{}, wake: make(chan struct{})}
	if err := s.recover(o.Consumers); err != nil {
		lock.Close()
		return nil, err
	}
	if o.Writer != "" {
		h := s.writers[o.Writer]
		s.chain = auditstream.NewChain(o.Writer, h.Seq, h.Hash)
	}
	if err := s.startRotation(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func segName(n uint64) string { return fmt.Sprintf("%020d.seg", n) }

// recover lists the segments, truncates a torn tail, learns each writer's
// last record and loads the cursors.
func (s *Spool) recover(consumers []string) error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	named := map[string]bool{}
	for _, c := range consumers {
		if c == "" || strings.ContainsAny(c, "/\x00") {
			return fmt.Errorf("spool: %s: bad consumer name %q", s.dir, c)
		}
		named[c] = true
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".seg"):
			n, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
			if err == nil {
				s.segs = append(s.segs, n)
			}
		case strings.HasPrefix(name, "cursor.") && !named[strings.TrimPrefix(name, "cursor.")]:
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
		}
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i] < s.segs[j] })
	if err := s.dropPrepared(); err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(s.dir, "writers.json")); err == nil {
		if err := json.Unmarshal(b, &s.writers); err != nil {
			return fmt.Errorf("spool: %s: writers.json: %w", s.dir, err)
		}
	} else if !os.IsNotExist(err) {
		return fmt.Errorf("spool: %w", err)
	}
	for i, n := range s.segs {
		size, err := s.scan(n, i == len(s.segs)-1)
		if err != nil {
			return err
		}
		s.sizes[n] = size
		s.total += size
	}
	if len(s.segs) == 0 {
		s.segs = []uint64{1}
		s.sizes[1] = 0
	}
	last := s.segs[len(s.segs)-1]
	f, m, err := s.openActive(last, s.sizes[last])
	if err != nil {
		return err
	}
	s.f, s.m = f, m
	for c := range named {
		cur := Cursor{Seg: s.segs[0]}
		if b, err := os.ReadFile(filepath.Join(s.dir, "cursor."+c)); err == nil {
			if json.Unmarshal(b, &cur) != nil {
				// Not fsynced (writeCursor): a power loss may leave it
				// empty. From the start: sent again, not lost.
				cur = Cursor{Seg: s.segs[0]}
			}
		} else if !os.IsNotExist(err) {
			return fmt.Errorf("spool: %w", err)
		}
		s.cursors[c] = s.clamp(cur)
	}
	return nil
}

// clamp moves a cursor onto the segments that exist: before the first, to
// its start; past a segment's end (a torn line was cut off), to its end.
func (s *Spool) clamp(c Cursor) Cursor {
	if c.Seg < s.segs[0] {
		return Cursor{Seg: s.segs[0]}
	}
	if last := s.segs[len(s.segs)-1]; c.Seg > last {
		return Cursor{Seg: last, Off: s.sizes[last]}
	}
	if size, ok := s.sizes[c.Seg]; ok && c.Off > size {
		c.Off = size
	}
	return c
}

// chainFields is the part of a record the spool reads.
type chainFields struct {
	Sigil struct {
		Writer string `json:"writer"`
		Seq    int64  `json:"seq"`
		Hash   string `json:"hash"`
	} `json:"sigil"`
}

// scan reads segment n, noting each writer's last record, and returns its
// size; in the last segment a torn final line is truncated.
func (s *Spool) scan(n uint64, last bool) (int64, error) {
	path := filepath.Join(s.dir, segName(n))
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	// The lines end at the zero fill of a mapped segment (a JSON line
	// holds no zero byte), if any.
	end := bytes.IndexByte(b, 0)
	if end < 0 {
		end = len(b)
	}
	whole := bytes.LastIndexByte(b[:end], '\n') + 1
	if whole < end && !last {
		return 0, fmt.Errorf("spool: %s: a torn line in a segment that is not the last", path)
	}
	if whole < len(b) {
		if err := os.Truncate(path, int64(whole)); err != nil {
			return 0, fmt.Errorf("spool: truncating the torn last line: %w", err)
		}
	}
	for line := range bytes.Lines(b[:whole]) {
		var r chainFields
		if json.Unmarshal(line, &r) != nil {
			continue // not a record: counted by no chain, found by Verify downstream
		}
		if h := s.writers[r.Sigil.Writer]; r.Sigil.Seq > h.Seq {
			s.writers[r.Sigil.Writer] = head{Seq: r.Sigil.Seq, Hash: r.Sigil.Hash}
		}
	}
	return int64(whole), nil
}

// Close finishes the segment switches under way, closes the active
// segment (and removes a prepared one nothing was written to) and
// releases the directory.
func (s *Spool) Close() error {
	bgErr := s.stopRotation()
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.closeActive(s.f, s.m, s.sizes[s.segs[len(s.segs)-1]])
	s.lock.Close()
	return errors.Join(bgErr, err)
}

// mapLen is how much of the active segment is mapped.
func (s *Spool) mapLen() int64 { return s.seg + mapSlack }

// openActive opens segment n to be written at its end, mapped where the
// system allows (m nil otherwise: it is written with pwrite(2)).
func (s *Spool) openActive(n uint64, size int64) (*os.File, []byte, error) {
	f, err := os.OpenFile(filepath.Join(s.dir, segName(n)), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("spool: %w", err)
	}
	m, err := mapSegment(f, size, s.mapLen())
	if err != nil {
		// Not mapped (not Linux, or no room for the fill): written with
		// pwrite(2), as durable, one system call a record. Cut back what
		// fill there is.
		if terr := f.Truncate(size); terr != nil {
			f.Close()
			return nil, nil, fmt.Errorf("spool: %w", terr)
		}
		m = nil
	}
	return f, m, nil
}

// closeActive unmaps a segment that stops being active, cuts its zero
// fill off (size is its lines' length) and closes it.
func (s *Spool) closeActive(f *os.File, m []byte, size int64) error {
	var errs []error
	if m != nil {
		errs = append(errs, unmapSegment(m))
		if err := f.Truncate(size); err != nil {
			errs = append(errs, fmt.Errorf("spool: %w", err))
		}
	}
	if err := f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("spool: %w", err))
	}
	return errors.Join(errs...)
}

// bytesLocked is the size of the segments on disk.
func (s *Spool) bytesLocked() int64 { return s.total }

// Append seals r into the spool's chain and writes it. When the spool is
// full, r is dropped and counted, and ErrFull returned; the next record
// that fits is preceded by a gap record counting every one dropped. Any
// other error (a failed write) also drops r and counts it.
func (s *Spool) Append(r *auditstream.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.chain == nil {
		return errors.New("spool: Append on a spool without a writer")
	}
	// On the hot path (once per decision): the records are sealed into
	// s.buf, reused across appends, by a copy of the chain that replaces
	// it once they are written (BenchmarkAuditRecord, bench/README.md).
	trial := *s.chain
	buf := s.buf[:0]
	var err error
	if s.lost > 0 {
		gap := auditstream.Record{DecisionID: auditstream.NewID(), Timestamp: s.now().UTC(), Path: auditstream.PathEvent(auditstream.TypeGap),
			Sigil: auditstream.Meta{Type: auditstream.TypeGap, Lost: s.lost}}
		if buf, err = appendSealed(buf, &trial, &gap); err != nil {
			return s.drop(err)
		}
	}
	if buf, err = appendSealed(buf, &trial, r); err != nil {
		return s.drop(err)
	}
	if cap(buf) <= maxKeptBuf {
		s.buf = buf
	}
	if s.bytesLocked()+int64(len(buf)) > s.max && !s.makeRoomLocked(len(buf)) {
		return s.drop(ErrFull)
	}
	seq, h := trial.Last()
	before := s.writers[s.chain.Writer()]
	s.writers[s.chain.Writer()] = head{Seq: seq, Hash: h} // before a segment switch records it
	if err := s.writeLocked(buf); err != nil {
		s.writers[s.chain.Writer()] = before
		return s.drop(err)
	}
	*s.chain = trial
	s.appended++
	s.lost = 0
	return nil
}

// chainWriter returns the spool's own writer name.
func (s *Spool) chainWriter() (string, bool) {
	if s.chain == nil {
		return "", false
	}
	return s.chain.Writer(), true
}

// drop counts one own record lost.
func (s *Spool) drop(err error) error {
	s.lost++
	s.dropped++
	return err
}

// appendSealed seals r in c and appends its JSON line to buf.
func appendSealed(buf []byte, c *auditstream.Chain, r *auditstream.Record) ([]byte, error) {
	buf, err := c.AppendSealed(buf, r)
	if err != nil {
		return buf, fmt.Errorf("spool: %w", err)
	}
	return append(buf, '\n'), nil
}

// writeLocked writes whole lines at the end of the active segment, undoing
// a partial write, and starts a new segment once it is full.
func (s *Spool) writeLocked(b []byte) error {
	active := s.segs[len(s.segs)-1]
	off := s.sizes[active]
	if end := off + int64(len(b)); s.m != nil && end <= int64(len(s.m)) {
		// On the hot path (once per decision): a copy into the page cache
		// instead of a write(2) (BenchmarkAuditRecord, bench/README.md).
		copy(s.m[off:end], b)
	} else if _, err := s.f.WriteAt(b, off); err != nil {
		// A partial line would tear the segment: cut it back (to the
		// mapping's end, whose zero fill is the segment's own).
		if s.m != nil && off < int64(len(s.m)) {
			clear(s.m[off:])
		}
		_ = s.f.Truncate(max(off, int64(len(s.m))))
		return fmt.Errorf("spool: writing %s: %w", segName(active), err)
	}
	s.sizes[active] += int64(len(b))
	s.total += int64(len(b))
	if s.armed {
		close(s.wake)
		s.wake, s.armed = make(chan struct{}), false
	}
	if s.sizes[active] >= s.seg/2 {
		s.requestNextLocked()
	}
	if s.sizes[active] >= s.seg {
		// The lines are written whatever becomes of this: without a
		// prepared next segment the full one stays active, and the next
		// write tries again.
		s.rotateLocked()
	}
	return nil
}

// Head returns the last seq and hash spooled for writer (0, "" if none).
func (s *Spool) Head(writer string) (int64, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.writers[writer]
	return h.Seq, h.Hash
}

// Instance returns the writer name of the chain kept in dir for id: id,
// "#" and a random instance suffix made the first time and kept in
// dir/writer, so a restarted process continues its chain, while two
// processes with one identity (replicas) keep two. A dir that held
// another identity's chain gets a new suffix.
func Instance(dir, id string) (string, error) {
	if err := privateDir(dir); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "writer")
	if b, err := os.ReadFile(path); err == nil {
		if w := strings.TrimSpace(string(b)); strings.HasPrefix(w, id+"#") {
			return w, nil
		}
	} else if !os.IsNotExist(err) {
		return "", fmt.Errorf("spool: %w", err)
	}
	w := id + "#" + auditstream.NewID()[:8]
	if err := atomicfile.Write(path, []byte(w+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	return w, nil
}
