package h1

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"strings"
)

// A relay whose per-request features work on an *http.Request (policy
// input, tracing, the access log) reads the request from the Head it
// parsed (Request), lets the features change it, and forwards the head
// the request then has (AppendRequestHead) with the body as it came.

// Request reads the head h parsed as an *http.Request, as this package's
// server reads one: the fast path when it takes the head, else net/http
// after the strict checks. Its Body is http.NoBody (the relay passes the
// body on as it came) and its ContentLength the head's (-1 when
// chunked). The request shares no memory with the bytes h was parsed
// from. Errors are the server's for the same head (ErrFraming wrapped,
// or net/http's).
func (h *Head) Request() (*http.Request, error) {
	req := parseRequest(h.raw, nil, nil)
	if req == nil {
		var err error
		raw := bytes.Clone(h.raw) // net/http's strings may share its reader's buffer
		if req, err = readRequestStrict(bufio.NewReaderSize(bytes.NewReader(raw), len(raw)), raw, true); err != nil {
			return nil, err
		}
	}
	req.Body, req.ContentLength = http.NoBody, h.ContentLength
	if h.Chunked {
		req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
	}
	return req, nil
}

// AppendRequestHead appends to dst req's head as a relay forwards it to
// an HTTP/1.1 upstream: the request line with req.URL's origin-form
// target, Host, req's header fields sorted by name (CR and LF in a value
// turned to spaces, as Request.Write does; a name that is not a token
// left out), then the framing of h, the head req was read from, since
// the body follows as it came: its Content-Length, or Transfer-Encoding:
// chunked with a Trailer field declaring req.Trailer's names (sorted),
// if any, as Request.Write declares them (RFC 9110 §6.6.2: the parse
// moved the received declaration there). Host, Content-Length and
// Transfer-Encoding in req.Header are not written; hop-by-hop fields,
// Trailer among them, are the caller's to have removed
// (proxy/hop.StripRequestHeaders).
func AppendRequestHead(dst []byte, req *http.Request, h *Head) []byte {
	dst = append(dst, req.Method...)
	dst = append(dst, ' ')
	dst = append(dst, req.URL.RequestURI()...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = appendValue(dst, hostOf(req))
	dst = append(dst, "\r\n"...)
	dst = appendFields(dst, req.Header)
	switch {
	case h.Chunked:
		var arr [8]string
		if names := sortedNames(arr[:0], req.Trailer); len(names) > 0 {
			dst = append(dst, "Trailer: "...)
			dst = append(dst, strings.Join(names, ", ")...)
			dst = append(dst, "\r\n"...)
		}
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	case h.ContentLength >= 0:
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, h.ContentLength, 10)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// appendFields appends h's fields but Host, Content-Length and
// Transfer-Encoding, sorted by name, each value trimmed and with CR and
// LF turned to spaces, as Request.Write writes them.
func appendFields(dst []byte, h http.Header) []byte {
	var arr [32]string
	for _, k := range sortedNames(arr[:0], h) {
		for _, v := range h[k] {
			dst = append(dst, k...)
			dst = append(dst, ": "...)
			dst = appendValue(dst, strings.TrimSpace(v))
			dst = append(dst, "\r\n"...)
		}
	}
	return dst
}

// appendValue appends a field value with CR and LF turned to spaces.
func appendValue(dst []byte, v string) []byte {
	if !strings.ContainsAny(v, "\r\n") {
		return append(dst, v...)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst
}

// AppendResponse appends to dst a whole answer a relay makes itself
// (a refusal, an error): the status line, header's fields sorted by name
// (CR and LF in a value turned to spaces), Content-Length, the blank line
// and body; for a HEAD request (head) the body is left out and
// Content-Length still says its length (RFC 9110 §9.3.2). header's
// Content-Length and Transfer-Encoding are not written.
func AppendResponse(dst []byte, code int, header http.Header, body []byte, head bool) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	dst = append(dst, http.StatusText(code)...)
	dst = append(dst, "\r\n"...)
	dst = appendFields(dst, header)
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n\r\n"...)
	if !head {
		dst = append(dst, body...)
	}
	return dst
}
