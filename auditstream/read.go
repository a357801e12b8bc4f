package auditstream

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/sigil-mesh/sigil/internal/jsonlimit"
)

// MaxRecordBytes bounds one record read back (a line of the file sink,
// an element of an upload array): a bigger one is refused, not buffered.
const MaxRecordBytes = 16 << 20

// Pos is where a record was read: a file and its line (JSON lines) or
// its element (JSON array, 1-based).
type Pos struct {
	File    string
	Line    int
	InArray bool
}

// String is "file:line", or "file[#n]" for an array's element n.
func (p Pos) String() string {
	if p.InArray {
		return fmt.Sprintf("%s[#%d]", p.File, p.Line)
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Read reads the records of one exported file: JSON lines as the file
// sink writes them, or a JSON array of records as OPA's decision-log
// upload API sends them, either of them plain or gzip'd (the upload's
// Content-Encoding). Each record is decoded strictly (an unknown field
// is an edit the hash would not cover, so it is refused); each is passed
// to each with its position. Errors name the file and position.
func Read(name string, r io.Reader, each func(Record, Pos) error) error {
	br, first, closeFn, err := jsonlimit.Open(r)
	defer closeFn()
	switch {
	case err == io.EOF:
		return nil // an empty file: no records
	case err != nil:
		return fmt.Errorf("auditstream: %s: %w", name, err)
	}
	if first == '[' {
		return readArray(name, br, each)
	}
	return readLines(name, br, each)
}

// decodeRecord decodes the record read at pos strictly: unknown fields
// and trailing data are refused.
func decodeRecord(b []byte, pos Pos) (Record, error) {
	var rec Record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return rec, fmt.Errorf("auditstream: %s: not a record: %w", pos, err)
	}
	if dec.More() {
		return rec, fmt.Errorf("auditstream: %s: not a record: data after the record", pos)
	}
	return rec, nil
}

// readLines reads JSON lines; blank lines are skipped.
func readLines(name string, br *bufio.Reader, each func(Record, Pos) error) error {
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 64<<10), MaxRecordBytes)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		pos := Pos{File: name, Line: n}
		rec, err := decodeRecord(line, pos)
		if err != nil {
			return err
		}
		if err := each(rec, pos); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("auditstream: %s: reading: %w", name, err)
	}
	return nil
}

// readArray reads one JSON array of records.
func readArray(name string, br *bufio.Reader, each func(Record, Pos) error) error {
	// Decode buffers a whole element: the reader is cut off past
	// MaxRecordBytes of one, so a gzip'd batch that inflates to GiB is
	// refused, not held in memory.
	lr := jsonlimit.NewReader(br)
	dec := json.NewDecoder(lr)
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("auditstream: %s: %w", name, err)
	}
	for n := 1; dec.More(); n++ {
		pos := Pos{File: name, Line: n, InArray: true}
		var raw json.RawMessage
		lr.Allow(dec.InputOffset(), MaxRecordBytes)
		if err := dec.Decode(&raw); errors.Is(err, jsonlimit.ErrTooLarge) {
			return fmt.Errorf("auditstream: %s: record of more than %d bytes", pos, MaxRecordBytes)
		} else if err != nil {
			return fmt.Errorf("auditstream: %s: %w", pos, err)
		}
		if len(raw) > MaxRecordBytes {
			return fmt.Errorf("auditstream: %s: record of %d bytes, more than %d", pos, len(raw), MaxRecordBytes)
		}
		rec, err := decodeRecord(raw, pos)
		if err != nil {
			return err
		}
		if err := each(rec, pos); err != nil {
			return err
		}
	}
	lr.Allow(dec.InputOffset(), 0)
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("auditstream: %s: end of array: %w", name, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("auditstream: %s: data after the array", name)
	}
	return nil
}
