package spool

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/sigil-mesh/sigil/auditstream"
)

// ingestBufs holds IngestChecked's encoding buffers between batches (on
// the server's hot path: a fresh buffer the size of each batch was a
// large share of its garbage, bench/README.md). A buffer is put back only
// once writeLocked has copied it into the segment.
var ingestBufs sync.Pool // of *[]byte

// maxKeptIngestBuf bounds the buffers kept in ingestBufs: a batch larger
// than this (rare: the shipper's batches are smaller) gets its own.
const maxKeptIngestBuf = 4 << 20

// Ingest writes records other writers sealed (a sidecar's, reaching the
// server), as JSON lines, after checking each one's hash. Records whose
// seq is not above the highest of their writer already spooled are
// duplicates (a re-sent batch) and skipped. Either every new record is
// written or, with an error, none is (ErrFull: over the limit). It
// returns how many were new.
func (s *Spool) Ingest(lines [][]byte) (int, error) { return s.IngestChecked(lines, nil) }

// IngestChecked is Ingest that passes each record, decoded, to accept
// (when not nil) before anything of the batch is written: an error of
// accept refuses the batch and is returned as it is. The caller's checks
// then cost no decode of their own. The record accept gets always holds
// the envelope (DecisionID, Timestamp, Path, Error, Sigil); its content
// (Labels, Input, Result, Bundles, Erased) is set only when the line was
// not in its sealed form (auditstream.ParseSealed).
func (s *Spool) IngestChecked(lines [][]byte, accept func(*auditstream.Record) error) (int, error) {
	// Read, checked and encoded once each before the lock: Append (the
	// server's own records) and the exporters' Read do not wait for it.
	type checked struct {
		writer string
		head   head
		end    int // of its line in enc
	}
	recs := make([]checked, 0, len(lines))
	size := 0
	for _, line := range lines {
		size += len(line) + 1
	}
	var enc []byte
	if p, _ := ingestBufs.Get().(*[]byte); p != nil && cap(*p) >= size {
		enc = (*p)[:0]
	} else {
		enc = make([]byte, 0, size)
	}
	defer func() {
		if cap(enc) <= maxKeptIngestBuf {
			ingestBufs.Put(&enc)
		}
	}()
	var lc auditstream.LineChecker
	for _, line := range lines {
		// A line in its sealed form (every sidecar's) is the record's own
		// encoding: its hash is checked over its bytes and the line
		// spooled as it came. Any other spelling is decoded and spooled
		// as the record's own encoding (the bytes its hash covers), not
		// the sender's text.
		r, sealed := auditstream.ParseSealed(line)
		if !sealed {
			if err := json.Unmarshal(line, &r); err != nil {
				return 0, fmt.Errorf("spool: ingested record: %w", err)
			}
		}
		if accept != nil {
			if err := accept(&r); err != nil {
				return 0, err
			}
		}
		if sealed {
			if err := lc.Check(line, &r); err != nil {
				return 0, fmt.Errorf("spool: ingested record: %w", err)
			}
			enc = append(enc, line...)
		} else {
			var err error
			if enc, err = auditstream.AppendChecked(enc, &r); err != nil {
				return 0, fmt.Errorf("spool: ingested record: %w", err)
			}
		}
		enc = append(enc, '\n')
		recs = append(recs, checked{writer: r.Sigil.Writer, head: head{Seq: r.Sigil.Seq, Hash: r.Sigil.Hash}, end: len(enc)})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]head{}
	n := 0
	// The new lines are moved down over the duplicates, in place: each
	// goes to at most where it was read from, after it was read.
	buf := enc[:0]
	from := 0
	for _, c := range recs {
		line := enc[from:c.end]
		from = c.end
		w := c.writer
		if own, ok := s.chainWriter(); ok && w == own {
			return 0, fmt.Errorf("spool: ingested record claims this spool's own writer %s", w)
		}
		h, ok := seen[w]
		if !ok {
			h = s.writers[w]
		}
		if c.head.Seq <= h.Seq {
			continue
		}
		seen[w] = c.head
		buf = append(buf, line...)
		n++
	}
	if n == 0 {
		return 0, nil
	}
	if s.bytesLocked()+int64(len(buf)) > s.max && !s.makeRoomLocked(len(buf)) {
		s.dropped += int64(n)
		return 0, ErrFull
	}
	before := make(map[string]head, len(seen))
	for w, h := range seen {
		before[w] = s.writers[w]
		s.writers[w] = h // before a segment switch records them
	}
	if err := s.writeLocked(buf); err != nil {
		for w, h := range before {
			s.writers[w] = h
		}
		return 0, err
	}
	s.appended += int64(n)
	return n, nil
}
