package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/auditstream"
)

// verifyAuditFiles is `sigil audit verify FILE...`. Each file is either
// the CA's local trail (audit's format: one chain per file) or exported
// audit stream records (the file sink's JSON lines, or OPA upload
// batches, gzip'd or not); the kind is told per file. Exported files are
// checked together, writer by writer, as one writer's records may be
// spread over many files. It returns an error when any trail or writer is
// broken.
func verifyAuditFiles(out io.Writer, paths []string) error {
	bad := 0
	var v auditstream.Verifier
	exported := 0
	for _, path := range paths {
		stream, err := isStreamFile(path)
		if err != nil {
			fmt.Fprintf(out, "%s: BROKEN: %v\n", path, err)
			bad++
			continue
		}
		if !stream {
			if !verifyTrail(out, path) {
				bad++
			}
			continue
		}
		exported++
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintf(out, "%s: BROKEN: %v\n", path, err)
			bad++
			continue
		}
		err = auditstream.Read(path, f, func(r auditstream.Record, p auditstream.Pos) error { v.Add(r, p); return nil })
		f.Close()
		if err != nil {
			fmt.Fprintf(out, "%s: BROKEN: %v\n", path, err)
			bad++
		}
	}
	badWriters := 0
	if exported > 0 {
		for _, w := range v.Report() {
			if !reportWriter(out, w) {
				badWriters++
			}
		}
	}
	var faults []string
	if bad > 0 {
		faults = append(faults, fmt.Sprintf("%d of %d files broken or unreadable", bad, len(paths)))
	}
	if badWriters > 0 {
		faults = append(faults, fmt.Sprintf("%d writers' chains broken", badWriters))
	}
	if len(faults) > 0 {
		return fmt.Errorf("audit verify: %s", strings.Join(faults, "; "))
	}
	return nil
}

// isStreamFile tells exported audit stream records (gzip, a JSON array,
// or JSON lines whose first object has "sigil") from the CA's trail.
func isStreamFile(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	head, _ := br.Peek(2)
	if len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		return true, nil
	}
	line, err := br.ReadSlice('\n')
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return false, fmt.Errorf("audit verify: %s: %w", path, err)
	}
	line = bytes.TrimSpace(line)
	if bytes.HasPrefix(line, []byte("[")) {
		return true, nil
	}
	var probe struct {
		Sigil json.RawMessage `json:"sigil"`
	}
	return json.Unmarshal(line, &probe) == nil && probe.Sigil != nil, nil
}

// reportWriter prints one writer's verdict and reports whether it holds.
func reportWriter(out io.Writer, w auditstream.WriterReport) bool {
	status := "ok"
	if w.Broken != nil {
		status = "BROKEN"
	}
	fmt.Fprintf(out, "writer %s: %s, %d records, seq %d..%d, %d gaps recorded (%d lost), %d duplicates, %d missing\n",
		w.Writer, status, w.Records, w.First, w.Last, len(w.Gaps), w.Lost, w.Duplicates, w.Missing)
	for _, g := range w.Gaps {
		fmt.Fprintf(out, "writer %s: gap at seq %d (%s): %d records lost\n", w.Writer, g.Seq, g.Pos, g.Lost)
	}
	if w.Broken != nil {
		fmt.Fprintf(out, "writer %s: first broken link at %s\n", w.Writer, w.Broken)
		return false
	}
	return true
}

// verifyTrail checks one CA trail file and reports whether it holds.
func verifyTrail(out io.Writer, path string) bool {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintf(out, "%s: BROKEN: %v\n", path, err)
		return false
	}
	sum, err := audit.Check(f)
	last := sum.Last
	f.Close()
	if err != nil {
		fmt.Fprintf(out, "%s: BROKEN: %v\n", path, err)
		return false
	}
	if last.Seq == 0 {
		fmt.Fprintf(out, "%s: ok, empty\n", path)
		return true
	}
	fmt.Fprintf(out, "%s: ok, %d events, last %s at %s; actions: %d committed, %d aborted, %d pending\n", path, last.Seq, last.Type,
		last.Time.Format("2006-01-02T15:04:05Z07:00"), sum.Committed, sum.Aborted, len(sum.Pending))
	// Pending: written before a store change whose outcome is not
	// recorded yet (the server is running, or stopped and settles them
	// when it starts).
	for _, e := range sum.Aborts {
		fmt.Fprintf(out, "%s: aborted: intent seq %s (%s records): %s\n", path, e.Details[audit.DetailIntentSeq], e.Details[audit.DetailIntentCount], e.Details[audit.DetailReason])
	}
	for _, e := range sum.Pending {
		fmt.Fprintf(out, "%s: pending: seq %d %s %s\n", path, e.Seq, e.Type, e.Subject)
	}
	return true
}
