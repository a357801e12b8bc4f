// Package jsonlimit bounds how much of its input a json.Decoder may
// buffer for one value: Decode reads a whole value into memory before it
// returns, so an element of a JSON array read from a file (a gzip'd
// upload batch, a few KiB that inflate to GiB) is bounded only by the
// memory of the reader unless its input is cut off.
//
//	lr := jsonlimit.NewReader(r)
//	dec := json.NewDecoder(lr)
//	for dec.More() {
//		lr.Allow(dec.InputOffset(), maxValueBytes)
//		if err := dec.Decode(&raw); err != nil { ... } // errors.Is(err, jsonlimit.ErrTooLarge)
//	}
package jsonlimit

import (
	"bufio"
	"compress/gzip"
	"errors"
	"io"
)

// ErrTooLarge is returned by Read past the allowance: the value being
// decoded is larger than the caller allows.
var ErrTooLarge = errors.New("jsonlimit: JSON value larger than allowed")

// slack is read beyond a value's allowance: the decoder reads ahead in
// chunks, so a value just under the bound must not fail for the chunk
// that holds its end.
const slack = 64 << 10

// Reader passes an io.Reader on until the allowance set by Allow is
// used up, then fails with ErrTooLarge.
type Reader struct {
	r     io.Reader
	read  int64 // bytes passed on so far
	limit int64 // read may not pass this
}

// NewReader returns a Reader of r that allows 1 MiB until Allow is called.
func NewReader(r io.Reader) *Reader { return &Reader{r: r, limit: 1 << 20} }

// Allow lets the decoder read up to n bytes (plus a read-ahead slack)
// past offset, the decoder's InputOffset before the next Decode or Token.
func (l *Reader) Allow(offset, n int64) { l.limit = offset + n + slack }

// Read implements io.Reader.
func (l *Reader) Read(p []byte) (int, error) {
	if l.read >= l.limit {
		return 0, ErrTooLarge
	}
	if rest := l.limit - l.read; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	return n, err
}

// Open prepares a file of JSON records for reading, as Sigil's exported
// audit files and decision logs come: gzip'd or not (detected by gzip's
// magic bytes, RFC 1952, whatever the file's name), JSON lines or one
// JSON array (OPA's decision-log upload body). It returns a reader of the
// plain content and its first byte that is not JSON white space, left
// unread ('[' for an array); io.EOF for an input with nothing else.
// close releases the gzip reader, if any. Errors are the readers' own
// (compress/gzip's start with "gzip: "), for the caller to name the file.
func Open(r io.Reader) (br *bufio.Reader, first byte, close func() error, err error) {
	br = bufio.NewReader(r)
	close = func() error { return nil }
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, 0, close, err // compress/gzip's, which names gzip
		}
		br, close = bufio.NewReader(zr), zr.Close
	}
	for {
		b, err := br.ReadByte()
		if err != nil {
			return br, 0, close, err
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return br, b, close, br.UnreadByte()
	}
}
