package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"

	"golang.org/x/net/http/httpguts"
)

// The common message head — HTTP/1.1, an origin-form path of plain
// characters, a Content-Length or no body, no folded or odd header lines —
// is parsed here from the reader's buffer in five allocations (one string
// for the whole head, the map, one slice of values, the request or
// response with its URL and body), where http.ReadRequest takes 8 and
// http.ReadResponse 9; writeRequest (write.go) takes none where
// Request.Write takes 5; what that saved, per exchange and in a sidecar's
// CPU, is in bench/README.md ("Figures once quoted in the code"). Anything else — chunked or other transfer
// codings, Trailer, Pragma, Expect, several Host or Content-Length headers, bare
// LF line ends, escapes in the path, HTTP/1.0, informational or bodiless
// statuses — is left to the strict path (strict.go), which checks the
// same unconsumed bytes and has net/http parse them: the fast path never
// decides a case differently, it only declines it. FuzzParseRequest and
// FuzzParseResponse hold it to that.

// peekHead returns the message head at the front of br, through its blank
// line, without consuming it; ok is false if it does not fit in br's
// buffer or the connection ended first (net/http then reads it and reports
// what was wrong).
func peekHead(br *bufio.Reader) (head []byte, ok bool) {
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, crlf2); i >= 0 {
			return buf[:i+4], true
		}
		if len(buf) >= br.Size() {
			return nil, false
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, false
		}
	}
}

var crlf2 = []byte("\r\n\r\n")

// readRequest reads a request as http.ReadRequest does, parsing the common
// case itself. base, if not nil, is a request with nothing set but its
// context: the request read has that context (set by copying base, where
// WithContext would allocate a second request).
func readRequest(br *bufio.Reader, base *http.Request) (*http.Request, error) {
	head, ok := peekHead(br)
	if ok {
		if req := parseRequest(head, br, base); req != nil {
			br.Discard(len(head))
			return req, nil
		}
	}
	req, err := readRequestStrict(br, head, ok)
	if err == nil && base != nil {
		req = req.WithContext(base.Context())
	}
	return req, err
}

// readResponse reads req's response as http.ReadResponse does, parsing
// the common case itself. A response parsed here comes with room for the
// client's body wrapper in its own allocation (nil otherwise).
func readResponse(br *bufio.Reader, req *http.Request) (*http.Response, *body, error) {
	head, ok := peekHead(br)
	if ok && req.Method != http.MethodHead {
		if p := parseResponse(head, br, req); p != nil {
			br.Discard(len(head))
			return &p.resp, &p.wrap, nil
		}
	}
	resp, err := readResponseStrict(br, head, ok, req)
	return resp, nil, err
}

// parsedRequest puts a request and the parts it points to in one
// allocation.
type parsedRequest struct {
	req  http.Request
	url  url.URL
	body lengthBody
	vals [headerValues]string // the header's values, when they fit
}

// headerValues is how many header lines a parsed head holds in its own
// allocation; a head with more (a browser's may) gets a slice of its own.
// Sixteen covers what curl, fortio, gRPC clients and the sidecars
// themselves send, plus the headers the mesh adds (tracing, XFCC).
const headerValues = 16

// parseRequest parses a request head that br's body reads follow, or
// returns nil for net/http to parse. The request starts as a copy of base
// (see readRequest) if base is not nil.
func parseRequest(head []byte, br *bufio.Reader, base *http.Request) *http.Request {
	line, rest, ok := CutLine(head)
	if !ok {
		return nil
	}
	method, line, ok1 := bytes.Cut(line, sp)
	target, proto, ok2 := bytes.Cut(line, sp)
	if !ok1 || !ok2 || len(method) == 0 || !isToken(method) || string(proto) != "HTTP/1.1" {
		return nil
	}
	path, query, hasQuery := bytes.Cut(target, question)
	if len(path) == 0 || path[0] != '/' || !plainPath(path) || hasQuery && (len(query) == 0 || !plainQuery(query)) {
		return nil
	}
	s := string(head) // every string below is a part of this one
	p := &parsedRequest{}
	h, ok := parseHeader(s, len(head)-len(rest), p.vals[:])
	if !ok {
		return nil
	}
	length, ok := bodyLength(h)
	if !ok || len(h["Host"]) != 1 || h["Pragma"] != nil || h["Expect"] != nil {
		return nil
	}
	if base != nil {
		p.req = *base
	}
	p.url.Path = s[len(method)+1 : len(method)+1+len(path)]
	if hasQuery {
		p.url.RawQuery = s[len(method)+len(path)+2 : len(method)+1+len(target)]
	}
	r := &p.req
	r.Method = s[:len(method)]
	r.URL = &p.url
	r.RequestURI = s[len(method)+1 : len(method)+1+len(target)]
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Header = h
	if host := h["Host"]; host != nil {
		r.Host = host[0]
		delete(h, "Host") // as http.ReadRequest does
	}
	r.Close = httpguts.HeaderValuesContainsToken(h["Connection"], "close")
	r.ContentLength = max(length, 0)
	r.Body = http.NoBody
	if length > 0 {
		p.body = lengthBody{br: br, n: length}
		r.Body = &p.body
	}
	return r
}

// parsedResponse puts a response and its body in one allocation.
type parsedResponse struct {
	resp http.Response
	body lengthBody
	wrap body                 // the client's, which hands the connection back
	vals [headerValues]string // the header's values, when they fit
}

// parseResponse parses the head of req's response into the allocation
// that holds it (the response is its resp), or returns nil for net/http
// to parse.
func parseResponse(head []byte, br *bufio.Reader, req *http.Request) *parsedResponse {
	line, rest, ok := CutLine(head)
	if !ok || len(line) < 13 || string(line[:9]) != "HTTP/1.1 " || line[12] != ' ' {
		return nil
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return nil
		}
		code = code*10 + int(c-'0')
	}
	// Informational and bodiless answers have rules of their own.
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil
	}
	for _, c := range line[13:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil
		}
	}
	s := string(head)
	p := &parsedResponse{}
	h, ok := parseHeader(s, len(head)-len(rest), p.vals[:])
	if !ok {
		return nil
	}
	length, ok := bodyLength(h)
	if !ok || length < 0 {
		// No length: the body runs to the end of the connection.
		return nil
	}
	r := &p.resp
	r.Status = s[9:len(line)]
	r.StatusCode = code
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Header = h
	if httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		r.Close = true
		delete(h, "Connection")
	}
	r.ContentLength = length
	r.Body = http.NoBody
	if length > 0 {
		p.body = lengthBody{br: br, n: length}
		r.Body = &p.body
	}
	r.Request = req
	return p
}

// bodyLength reads the Content-Length (-1 if none). ok is false where
// net/http has more to decide: a transfer coding, a trailer, or a length
// given more than once or not as plain digits.
func bodyLength(h http.Header) (n int64, ok bool) {
	if h["Transfer-Encoding"] != nil || h["Trailer"] != nil {
		return 0, false
	}
	cl := h["Content-Length"]
	switch {
	case cl == nil:
		return -1, true
	case len(cl) > 1 || len(cl[0]) == 0 || len(cl[0]) > 18:
		return 0, false
	}
	for i := 0; i < len(cl[0]); i++ {
		if c := cl[0][i]; c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(cl[0], 10, 64)
	return n, err == nil
}

// parseHeader parses the header lines of s from off to its blank line.
// Keys and values are parts of s; values share one backing array, vals
// when they fit in it (the caller's parsed head: one allocation less).
func parseHeader(s string, off int, vals []string) (http.Header, bool) {
	lines := 0
	for i := off; i < len(s); i++ {
		if s[i] == '\n' {
			lines++
		}
	}
	lines-- // the blank line
	h := make(http.Header, lines)
	values := vals
	if lines > len(vals) {
		values = make([]string, lines)
	}
	for i := 0; ; i++ {
		end := off
		for end < len(s) && s[end] != '\n' {
			end++
		}
		if end == len(s) || end == off || s[end-1] != '\r' {
			return nil, false
		}
		line := s[off : end-1]
		off = end + 1
		if line == "" {
			return h, i == lines
		}
		colon := 0
		for colon < len(line) && line[colon] != ':' {
			colon++
		}
		if colon == 0 || colon == len(line) || i >= lines {
			return nil, false
		}
		key := line[:colon]
		if !isToken(key) {
			return nil, false
		}
		v := line[colon+1:]
		for j := 0; j < len(v); j++ {
			if c := v[j]; c < ' ' && c != '\t' || c == 0x7f {
				return nil, false
			}
		}
		v = trimOWS(v)
		if !isCanonical(key) {
			key = textproto.CanonicalMIMEHeaderKey(key)
		}
		values[i] = v
		if old, ok := h[key]; ok {
			h[key] = append(old, v)
		} else {
			h[key] = values[i : i+1 : i+1]
		}
	}
}

// CutLine splits b at its first CRLF into the line before it and the
// rest; ok is false when b has no LF, or its first LF has no CR before it.
// A CR inside the line is left to the checks of what the line holds
// (splitField, ParseHead, ParseChunkSize), which refuse it.
func CutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

var (
	sp       = []byte(" ")
	question = []byte("?")
)

// isCanonical reports whether a header key is already in
// textproto.CanonicalMIMEHeaderKey's form.
func isCanonical(k string) bool {
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}

// isToken: the characters of a method or header name (RFC 9110 tchar).
func isToken[T string | []byte](b T) bool {
	for i := 0; i < len(b); i++ {
		if !httpguts.IsTokenRune(rune(b[i])) {
			return false
		}
	}
	return true
}

// plainPath: characters net/url keeps as they are in a path (so Path is
// the target's path and RawPath stays empty); anything else, escapes
// included, goes to net/http.
func plainPath[T string | []byte](b T) bool {
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '_' || c == '.' || c == '~' || c == '/':
		case c == '$' || c == '&' || c == '+' || c == ',' || c == ':' || c == ';' || c == '=' || c == '@':
		default:
			return false
		}
	}
	return true
}

// plainQuery: visible ASCII other than '#' and a second '?'.
func plainQuery[T string | []byte](b T) bool {
	for i := 0; i < len(b); i++ {
		if c := b[i]; c <= ' ' || c >= 0x7f || c == '#' || c == '?' {
			return false
		}
	}
	return true
}

// lengthBody reads a body of known length from the connection's reader.
type lengthBody struct {
	br *bufio.Reader
	n  int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	switch {
	case b.n > 0 && err == io.EOF:
		err = io.ErrUnexpectedEOF
	case b.n == 0 && err == nil:
		err = io.EOF
	}
	return n, err
}

// Close is a no-op: the server or client owning the connection decides
// what happens to an unread rest.
func (b *lengthBody) Close() error { return nil }

// received reports whether the rest of the body is already in the
// connection's buffer, so reading it cannot wait on the peer.
func (b *lengthBody) received() bool { return b.n <= int64(b.br.Buffered()) }
