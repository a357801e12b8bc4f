package h1

import (
	"bytes"
	"errors"
	"net/url"

	"github.com/sigil-mesh/sigil/internal/ascii"
)

// A relay that forwards HTTP/1.1 messages as bytes (proxy/loop) reads
// their heads here: ParseHead checks a head as strictly as this package's
// server and client do (RFC 9112: CRLF line ends, token field names, no
// obs-fold, no control characters in values, one unambiguous framing)
// with the same line checks (cutLine, splitField), and returns spans of
// the bytes it was given; AppendForward writes the head on with its
// hop-by-hop fields removed (RFC 9110 §7.6.1). No http.Request and no
// header map are built. FuzzParseHead and FuzzParseResponseHead hold it
// to net/http: a head accepted here is one net/http reads, and framed
// the same way here, at the next hop and by net/http reading the head as
// forwarded.

// ErrUnsupported is a message that needs what a head-only relay does not
// do: HTTP/1.0, Upgrade, CONNECT, a transfer coding other than chunked,
// or a response read until the connection closes. A server answers it
// with 501 (RFC 9110 §15.6.2).
var ErrUnsupported = errors.New("h1: message needs HTTP/1.0, Upgrade, CONNECT, a transfer coding other than chunked or a read-until-close body, which the relay does not carry")

// MaxFields bounds the field lines of a head ParseHead takes, as Envoy's
// max_headers_count (default 100) does.
const MaxFields = 100

// maxConnectionOptions bounds the fields one head's Connection may name.
const maxConnectionOptions = 8

// hopFields are the hop-by-hop fields AppendForward removes, in lower
// case: proxy/hop.RemoveHeaders's (RFC 9110 §7.6.1, Proxy-Connection,
// Keep-Alive, and the proxy authentication fields) except
// Transfer-Encoding, which stays with the chunked body it frames.
// TestHopFieldsAsProxyHop holds the two lists together.
var hopFields = []string{"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade"}

// Head is one HTTP/1.1 message head as ParseHead read it. Its byte slices
// are spans of the bytes given to ParseHead and valid as long as those.
type Head struct {
	// Method and Target are a request's (nil in a response).
	Method, Target []byte
	// Status is a response's status code, 100–999; 0 in a request.
	Status int
	// HTTP10: the version is HTTP/1.0 (only responses may be).
	HTTP10 bool
	// ContentLength is the body's length in bytes; -1 when not given.
	ContentLength int64
	// Chunked: the body is chunked (the only transfer coding taken).
	Chunked bool
	// Close: the sender ends the connection after this message
	// (Connection: close, or HTTP/1.0 without keep-alive; RFC 9112 §9.3).
	Close bool
	// Expect100: a request's Expect is 100-continue (the only one
	// taken): the client may wait for a 100 before sending its body
	// (RFC 9110 §10.1.1).
	Expect100 bool

	raw    []byte
	start  int                 // the start line is raw[:start]
	fields [MaxFields]fieldPos // field lines, in order
	n      int
	drop   [maxConnectionOptions][]byte // fields Connection names
	ndrop  int
}

// fieldPos locates a field line in Head.raw: the line raw[off:end]
// (without CRLF), its name raw[off:colon], its value trimmed of OWS
// raw[vOff:vEnd].
type fieldPos struct{ off, colon, vOff, vEnd, end int }

// IsHEAD reports whether the request's method is HEAD (its response has
// no body, RFC 9110 §9.3.2).
func (h *Head) IsHEAD() bool { return string(h.Method) == "HEAD" }

// Len is the number of field lines.
func (h *Head) Len() int { return h.n }

// Field returns the name and value (without surrounding whitespace) of
// field line i, 0 ≤ i < Len(), as received.
func (h *Head) Field(i int) (name, value []byte) {
	f := h.fields[i]
	return h.raw[f.off:f.colon], h.raw[f.vOff:f.vEnd]
}

// ParseHead parses b, one message head from its start line through the
// blank line (CRLF line ends), into h: a request head if request, else a
// response's. Errors: ErrFraming (wrapped) for a malformed or ambiguous
// head (400), ErrUnsupported for one the relay does not carry (501), and
// an Expect other than 100-continue (417); ErrorAnswer gives the status.
// A request must be HTTP/1.1 with exactly one Host (RFC 9112 §3.2).
func ParseHead(b []byte, request bool, h *Head) error {
	*h = Head{ContentLength: -1, raw: b}
	start, rest, ok := CutLine(b)
	if !ok {
		return framingError("a line not ended by CRLF")
	}
	h.start = len(start)
	if err := h.parseStart(start, request); err != nil {
		return err
	}
	keepAlive, hosts := false, 0
	for off := len(start) + 2; ; {
		line, next, ok := CutLine(rest)
		if !ok {
			return framingError("a line not ended by CRLF")
		}
		if len(line) == 0 {
			break
		}
		if h.n == MaxFields {
			return framingError("more than %d field lines", MaxFields)
		}
		name, value, err := splitField(line)
		if err != nil {
			return err
		}
		vOff := off + len(name) + 1
		for b[vOff] == ' ' || b[vOff] == '\t' {
			vOff++
		}
		h.fields[h.n] = fieldPos{off: off, colon: off + len(name), vOff: vOff, vEnd: vOff + len(value), end: off + len(line)}
		h.n++
		off += len(line) + 2
		rest = next
		switch {
		case ascii.EqualFold(name, "content-length"):
			if h.ContentLength >= 0 {
				return framingError("more than one Content-Length")
			}
			if h.ContentLength, err = parseLength(value); err != nil {
				return err
			}
		case ascii.EqualFold(name, "transfer-encoding"):
			if h.Chunked || !ascii.EqualFold(value, "chunked") {
				return ErrUnsupported
			}
			h.Chunked = true
		case ascii.EqualFold(name, "host"):
			hosts++
		case ascii.EqualFold(name, "expect") && request:
			if !ascii.EqualFold(value, "100-continue") {
				return errExpectation
			}
			h.Expect100 = true
		case ascii.EqualFold(name, "connection"):
			if err := h.connection(value, &keepAlive); err != nil {
				return err
			}
		}
	}
	switch {
	case h.Chunked && h.ContentLength >= 0:
		return framingError("both Transfer-Encoding and Content-Length") // RFC 9112 §6.3
	case h.Chunked && h.HTTP10:
		return framingError("Transfer-Encoding in an HTTP/1.0 message") // RFC 9112 §6.1
	case request && hosts != 1:
		return framingError("%d Host fields in a request", hosts)
	}
	if h.HTTP10 && !keepAlive {
		h.Close = true
	}
	return nil
}

// connection reads one Connection field's options.
func (h *Head) connection(value []byte, keepAlive *bool) error {
	for len(value) > 0 {
		tok, rest, _ := bytes.Cut(value, comma)
		value = rest
		switch tok = trimOWS(tok); {
		case len(tok) == 0:
		case ascii.EqualFold(tok, "close"):
			h.Close = true
		case ascii.EqualFold(tok, "keep-alive"):
			*keepAlive = true
		case ascii.EqualFold(tok, "upgrade"):
			return ErrUnsupported
		case ascii.EqualFold(tok, "content-length"), ascii.EqualFold(tok, "transfer-encoding"), ascii.EqualFold(tok, "host"):
			// Never dropped: without them the next hop would frame or
			// route the message differently than here (a smuggling
			// desync). A Handler may refuse such a request
			// (proxy/hop.TakeConnectionOptions does).
		case h.ndrop == maxConnectionOptions:
			return framingError("Connection names more than %d fields", maxConnectionOptions)
		default:
			h.drop[h.ndrop] = tok
			h.ndrop++
		}
	}
	return nil
}

var comma = []byte(",")

// parseStart reads a request line (method SP origin-, absolute- or
// asterisk-form target SP HTTP/1.1; RFC 9112 §3) or a status line
// (HTTP/1.x SP 3DIGIT SP reason; §4).
func (h *Head) parseStart(line []byte, request bool) error {
	if request {
		method, rest, ok1 := bytes.Cut(line, sp)
		target, version, ok2 := bytes.Cut(rest, sp)
		if !ok1 || !ok2 || len(method) == 0 || len(target) == 0 || !isToken(method) {
			return framingError("malformed request line %.40q", line)
		}
		for _, c := range target {
			// RFC 9112 §3.2 wants visible ASCII; bytes over 0x7f pass, as
			// net/http and proxy/h1's server take them (the sidecar then
			// normalizes them to escapes: package pathnorm).
			if c <= ' ' || c == 0x7f {
				return framingError("request-target holds a space or control character")
			}
		}
		switch {
		case string(method) == "CONNECT":
			return ErrUnsupported
		case target[0] != '/' && string(target) != "*" && !bytes.HasPrefix(target, []byte("http://")) && !bytes.HasPrefix(target, []byte("https://")):
			return framingError("request-target %.40q is not origin-, absolute- or asterisk-form", target)
		case target[0] == '/' && !escapesOK(target):
			return framingError("request-target %.40q has a %% not followed by two hex digits", target)
		case target[0] == 'h':
			if _, err := url.ParseRequestURI(string(target)); err != nil {
				return framingError("request-target %.40q: %v", target, err)
			}
		case string(version) == "HTTP/1.0":
			// A proxy sends its own version (RFC 9110 §6.2) and an HTTP/1.0
			// client cannot take a chunked answer: re-framing is not done.
			return ErrUnsupported
		case string(version) != "HTTP/1.1":
			return framingError("version %.40q", version)
		}
		h.Method, h.Target = method, target
		return nil
	}
	if len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return framingError("malformed status line %.40q", line)
	}
	switch string(line[:8]) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		h.HTTP10 = true
	default:
		return framingError("version %.40q", line[:8])
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return framingError("status code %.3q", line[9:12])
		}
		h.Status = h.Status*10 + int(c-'0')
	}
	for _, c := range line[12:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return framingError("control character in the status line")
		}
	}
	if h.Status < 100 {
		return framingError("status code %d", h.Status)
	}
	return nil
}

// escapesOK reports whether every '%' in the path of an origin-form
// target (up to any '?') begins a pct-encoded octet (RFC 3986 §2.1), as
// net/url requires of a request's path.
func escapesOK(target []byte) bool {
	path, _, _ := bytes.Cut(target, question)
	for i := 0; i < len(path); i++ {
		if path[i] == '%' && (i+2 >= len(path) || unhex(path[i+1]) < 0 || unhex(path[i+2]) < 0) {
			return false
		}
	}
	return true
}

// parseLength reads a Content-Length value: 1 to 18 decimal digits.
func parseLength(v []byte) (int64, error) {
	if len(v) == 0 || len(v) > 18 {
		return 0, framingError("Content-Length %.40q is not a length", v)
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, framingError("Content-Length %.40q is not a length", v)
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// AppendForward appends the head to dst as a proxy forwards it: the start
// line as received, then every field line as received except the
// hop-by-hop ones and those Connection names, then the blank line.
func (h *Head) AppendForward(dst []byte) []byte {
	dst = append(dst, h.raw[:h.start]...)
	dst = append(dst, '\r', '\n')
	for _, f := range h.fields[:h.n] {
		if !h.isHop(h.raw[f.off:f.colon]) {
			dst = append(dst, h.raw[f.off:f.end+2]...)
		}
	}
	return append(dst, '\r', '\n')
}

// isHop reports whether a field of this head is hop-by-hop.
func (h *Head) isHop(name []byte) bool {
	if isHopField(name) {
		return true
	}
	for _, d := range h.drop[:h.ndrop] {
		if ascii.EqualFold(name, string(d)) {
			return true
		}
	}
	return false
}

func isHopField(name []byte) bool {
	for _, f := range hopFields {
		if ascii.EqualFold(name, f) {
			return true
		}
	}
	return false
}

// ErrorAnswer is the whole answer a server gives a request it could not
// read for err, then closing the connection, as net/http's server
// answers: 431 for a head over the limit (ErrHeaderTooLarge), 417 for an
// unsupported Expect, 501 for ErrUnsupported, else 400.
func ErrorAnswer(err error) string {
	status := "400 Bad Request"
	switch {
	case errors.Is(err, ErrHeaderTooLarge):
		status = "431 Request Header Fields Too Large"
	case errors.Is(err, errExpectation):
		status = "417 Expectation Failed"
	case errors.Is(err, ErrUnsupported):
		status = "501 Not Implemented"
	}
	return "HTTP/1.1 " + status + "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" + status + "\n"
}
