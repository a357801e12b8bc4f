package auditstream

import (
	"fmt"
	"sort"
)

// Verifier checks exported records from any number of files and writers:
// Add each record as it is read, then Report. Records may come in any
// order and more than once (export is at-least-once); Report groups them
// by writer and orders them by seq. It keeps a few fields per record, not
// the records.
type Verifier struct {
	byWriter map[string][]seen
	n        int
}

// seen is what Verify keeps of one record.
type seen struct {
	seq        int64
	prev, hash string
	typ        string
	lost       int64
	pos        Pos
	order      int   // reading order, so equal seqs keep it
	bad        error // Check's verdict
}

// Add takes one record read at pos and checks its hash.
func (v *Verifier) Add(r Record, pos Pos) {
	if v.byWriter == nil {
		v.byWriter = map[string][]seen{}
	}
	s := seen{seq: r.Sigil.Seq, prev: r.Sigil.Prev, hash: r.Sigil.Hash, typ: r.Sigil.Type, lost: r.Sigil.Lost, pos: pos, order: v.n, bad: Check(r)}
	v.n++
	v.byWriter[r.Sigil.Writer] = append(v.byWriter[r.Sigil.Writer], s)
}

// Gap is a gap record: Lost records the writer or an exporter dropped.
// A recorded gap is not a break: the chain says what was lost.
type Gap struct {
	Seq  int64
	Lost int64
	Pos  Pos
}

// Break is the first place a writer's chain does not hold.
type Break struct {
	// Seq is the record at fault, or the first missing seq of a hole.
	Seq int64
	// Pos is where the record at fault was read (for a hole, the record
	// after it).
	Pos    Pos
	Reason string
}

// String is "file:line (seq N): reason".
func (b Break) String() string { return fmt.Sprintf("%s (seq %d): %s", b.Pos, b.Seq, b.Reason) }

// WriterReport is what Report found of one writer's chain.
type WriterReport struct {
	Writer string
	// Records counts distinct records (duplicates once); First and Last
	// are the lowest and highest seq read.
	Records     int
	First, Last int64
	// Gaps are the gap records, in seq order; Lost sums their counts.
	Gaps []Gap
	Lost int64
	// Duplicates counts records read again with the same seq and hash:
	// at-least-once delivery, not a break.
	Duplicates int
	// Missing counts seqs absent between First and Last (each hole is a
	// break; the first is named by Broken when it comes first).
	Missing int64
	// Broken is the first broken link in seq order; nil when the chain
	// holds from First to Last.
	Broken *Break
}

// Report returns one WriterReport per writer, sorted by writer. A chain
// may start after seq 1 (older files rotated away); everything from its
// first record on must link.
func (v *Verifier) Report() []WriterReport {
	writers := make([]string, 0, len(v.byWriter))
	for w := range v.byWriter {
		writers = append(writers, w)
	}
	sort.Strings(writers)
	out := make([]WriterReport, 0, len(writers))
	for _, w := range writers {
		out = append(out, verifyWriter(w, v.byWriter[w]))
	}
	return out
}

// verifyWriter walks one writer's records in seq order.
func verifyWriter(w string, recs []seen) WriterReport {
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].seq < recs[j].seq })
	rep := WriterReport{Writer: w, First: recs[0].seq, Last: recs[len(recs)-1].seq}
	brk := func(b Break) {
		if rep.Broken == nil {
			rep.Broken = &b
		}
	}
	if w == "" {
		brk(Break{Seq: recs[0].seq, Pos: recs[0].pos, Reason: "record names no writer"})
	}
	var last *seen
	for i := range recs {
		r := &recs[i]
		if last != nil && r.seq == last.seq {
			if r.hash == last.hash && r.bad == nil {
				rep.Duplicates++
			} else {
				brk(Break{Seq: r.seq, Pos: r.pos, Reason: fmt.Sprintf("a different record with the same seq as %s", last.pos)})
			}
			continue
		}
		rep.Records++
		switch {
		case r.bad != nil:
			brk(Break{Seq: r.seq, Pos: r.pos, Reason: "hash does not match the record's content (edited)"})
		case r.seq < 1:
			brk(Break{Seq: r.seq, Pos: r.pos, Reason: "seq below 1"})
		case last == nil && r.seq == 1 && r.prev != "":
			brk(Break{Seq: r.seq, Pos: r.pos, Reason: "the first record carries a prev_hash"})
		case last != nil && r.seq > last.seq+1:
			rep.Missing += r.seq - last.seq - 1
			brk(Break{Seq: last.seq + 1, Pos: r.pos, Reason: fmt.Sprintf("seq %d to %d missing (%d records, no gap record for them)", last.seq+1, r.seq-1, r.seq-last.seq-1)})
		case last != nil && r.prev != last.hash:
			brk(Break{Seq: r.seq, Pos: r.pos, Reason: fmt.Sprintf("prev_hash is not the hash of seq %d (%s)", last.seq, last.pos)})
		}
		if r.typ == TypeGap {
			rep.Gaps = append(rep.Gaps, Gap{Seq: r.seq, Lost: r.lost, Pos: r.pos})
			rep.Lost += r.lost
		}
		last = r
	}
	return rep
}
