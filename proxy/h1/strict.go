package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Messages the fast path declines are read here, strictly (RFC 9112):
// their head is checked byte by byte before net/http parses it, and their
// body is framed by this package, never by net/http's lenient readers. A
// message whose framing could be read two ways — two lengths, a transfer
// coding other than chunked, a length beside a coding, a coding on
// HTTP/1.0, an odd chunk line, an obs-folded or oddly spelled field — is
// refused, so bytes the sender meant as body never become a message of
// their own. net/http keeps deciding the rest of the head (request line,
// URL, status line), so this path accepts nothing it would refuse;
// FuzzReadStrict holds it to that.

// ErrFraming is a message whose framing is malformed or ambiguous: the
// server answers it with 400 and closes, the client closes the connection
// and reports it (RFC 9112 §6.1, §6.3, §7.1).
var ErrFraming = errors.New("h1: malformed message framing")

// errExpectation is an Expect other than 100-continue (RFC 9110 §10.1.1):
// 417, as net/http's server answers.
var errExpectation = errors.New("h1: unsupported expectation")

func framingError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFraming}, args...)...)
}

// maxHead bounds a head read line by line: a response's from an
// upstream (a request's is bounded sooner by the server's MaxHeaderBytes).
const maxHead = 1 << 20

// wholeHead returns the message head at the front of br: the peeked one,
// or, when it did not fit in br's buffer, the head read (and consumed) line
// by line, up to limit bytes.
func wholeHead(br *bufio.Reader, head []byte, peeked bool, limit int) ([]byte, error) {
	if peeked {
		return head, nil
	}
	var buf []byte
	start := 0 // of the current line
	for {
		line, err := br.ReadSlice('\n')
		buf = append(buf, line...)
		if len(buf) > limit {
			return nil, ErrHeaderTooLarge
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if start > 0 && len(buf)-start <= 2 && strings.TrimRight(string(buf[start:]), "\r") == "\n" {
			return buf, nil
		}
		start = len(buf)
	}
}

// framing is what a head says about the body's length.
type framing struct {
	te, cl, expect []string // field values as received
	hosts          int
	connect        bool // the start line's method is CONNECT
}

// checkHead checks a head's lines: each ends in CRLF (no bare CR or LF),
// no obs-fold (RFC 9112 §5.2), field names are tokens directly followed by
// the colon (§5.1), values hold no control characters but HTAB (RFC 9110
// §5.5). It collects the fields that frame the body.
func checkHead(head []byte) (framing, error) {
	var f framing
	first := true
	for len(head) > 0 {
		i := bytes.IndexByte(head, '\n')
		if i < 1 || head[i-1] != '\r' {
			return f, framingError("a line not ended by CRLF")
		}
		line := head[:i-1]
		head = head[i+1:]
		if first {
			first = false
			f.connect = bytes.HasPrefix(line, []byte("CONNECT "))
			for _, c := range line {
				if c < ' ' && c != '\t' || c == 0x7f {
					return f, framingError("control character in the start line")
				}
			}
			continue
		}
		if len(line) == 0 {
			break
		}
		name, value, err := splitField(line)
		if err != nil {
			return f, err
		}
		switch {
		case strings.EqualFold(string(name), "Transfer-Encoding"):
			f.te = append(f.te, string(value))
		case strings.EqualFold(string(name), "Content-Length"):
			f.cl = append(f.cl, string(value))
		case strings.EqualFold(string(name), "Host"):
			f.hosts++
		case strings.EqualFold(string(name), "Expect"):
			f.expect = append(f.expect, string(value))
		}
	}
	return f, nil
}

// splitField splits a field line (without its CRLF) into name and value.
func splitField(line []byte) (name, value []byte, err error) {
	if line[0] == ' ' || line[0] == '\t' {
		return nil, nil, framingError("obs-fold or whitespace before a field name")
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 1 || !isToken(line[:colon]) {
		return nil, nil, framingError("invalid field name %.40q", line)
	}
	value = line[colon+1:]
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, nil, framingError("control character in the value of %.40q", line[:colon])
		}
	}
	return line[:colon], trimOWS(value), nil
}

func trimOWS[T string | []byte](v T) T {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// check decides the framing fields once the version is known. It reports
// whether the body is chunked.
func (f *framing) check(major, minor int, request bool) (chunked bool, err error) {
	if major != 1 {
		return false, framingError("HTTP/%d.%d is not HTTP/1", major, minor)
	}
	if len(f.te) > 0 {
		switch {
		case minor == 0:
			return false, framingError("Transfer-Encoding in an HTTP/1.0 message")
		case len(f.te) > 1 || !strings.EqualFold(f.te[0], "chunked"):
			return false, framingError("transfer coding %.40q: only chunked is accepted", strings.Join(f.te, ", "))
		case len(f.cl) > 0:
			return false, framingError("both Transfer-Encoding and Content-Length")
		}
		chunked = true
	}
	for _, v := range f.cl {
		if len(v) == 0 || len(v) > 18 || strings.Trim(v, "0123456789") != "" {
			return false, framingError("Content-Length %.40q is not a length", v)
		}
		if v != f.cl[0] {
			return false, framingError("differing Content-Length values")
		}
	}
	if request {
		if f.hosts > 1 {
			return false, framingError("more than one Host")
		}
		// RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400 (as
		// net/http's server; CONNECT names its target in the start line).
		if f.hosts == 0 && minor >= 1 && !f.connect {
			return false, framingError("HTTP/1.1 request without Host")
		}
		for _, v := range f.expect {
			if !strings.EqualFold(v, "100-continue") {
				return false, fmt.Errorf("%w: %.40q", errExpectation, v)
			}
		}
	}
	return chunked, nil
}

// readRequestStrict reads a request the fast path declined. head is the
// peeked head if peeked.
func readRequestStrict(br *bufio.Reader, head []byte, peeked bool) (*http.Request, error) {
	head, err := wholeHead(br, head, peeked, maxHead)
	if err != nil {
		return nil, err
	}
	f, err := checkHead(head)
	if err != nil {
		return nil, err
	}
	req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(head), len(head)))
	if peeked {
		br.Discard(len(head))
	}
	if err != nil {
		return nil, fmt.Errorf("h1: bad request head: %w", noEOF(err))
	}
	chunked, err := f.check(req.ProtoMajor, req.ProtoMinor, true)
	if err != nil {
		return nil, err
	}
	// net/http framed the body on a reader holding only the head: frame
	// it again on the connection, strictly.
	switch {
	case chunked:
		req.Body = &chunkedBody{br: br, trailer: &req.Trailer}
	case req.ContentLength > 0:
		req.Body = &lengthBody{br: br, n: req.ContentLength}
	default:
		req.Body = http.NoBody
	}
	return req, nil
}

// readResponseStrict reads a response the fast path declined.
func readResponseStrict(br *bufio.Reader, head []byte, peeked bool, req *http.Request) (*http.Response, error) {
	head, err := wholeHead(br, head, peeked, maxHead)
	if err != nil {
		if errors.Is(err, ErrHeaderTooLarge) {
			err = framingError("response head over %d bytes", maxHead)
		}
		return nil, err
	}
	f, err := checkHead(head)
	if err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(bytes.NewReader(head), len(head)), req)
	if peeked {
		br.Discard(len(head))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFraming, noEOF(err))
	}
	chunked, err := f.check(resp.ProtoMajor, resp.ProtoMinor, false)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.Body == http.NoBody: // HEAD, 1xx, 204, 304, a zero length
	case chunked:
		resp.Body = &chunkedBody{br: br, trailer: &resp.Trailer}
	case resp.ContentLength >= 0:
		resp.Body = &lengthBody{br: br, n: resp.ContentLength}
	default:
		// No length: the body runs to the end of the connection, which
		// net/http has marked to close.
		resp.Body = eofBody{br}
	}
	return resp, nil
}

// noEOF: a head that ended early inside a complete head is malformed,
// not a closed connection.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// eofBody is a response body delimited by the end of the connection.
type eofBody struct{ br *bufio.Reader }

func (b eofBody) Read(p []byte) (int, error) { return b.br.Read(p) }
func (b eofBody) Close() error               { return nil }
