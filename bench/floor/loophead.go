package main

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/net/http/httpguts"
)

// The -loop data path's HTTP/1.1 framing. It forwards message heads
// rewritten (hop-by-hop headers removed, RFC 9110 §7.6.1) and bodies as
// they are framed on the wire (Content-Length, or chunked passed through
// verbatim), without building an http.Request. It is what the prototype
// needs to carry the bench's traffic and keep HTTP/1.1's framing right;
// it is not proxy/h1's strict parser (no request-target normalization,
// no HTTP/1.0 requests, no Upgrade or CONNECT, no read-until-close
// responses), and says so with an error where a message needs what it
// lacks.

// maxHead bounds a message head, in bytes (proxy/h1's default).
const maxHead = 64 << 10

// maxHeaders bounds the header lines of one head.
const maxHeaders = 100

var (
	errMalformed   = errors.New("floor: malformed message head")
	errUnsupported = errors.New("floor: message needs what the -loop path does not do (HTTP/1.0, Upgrade, CONNECT, a transfer coding other than chunked, a read-until-close body)")
	errHeadTooBig  = errors.New("floor: message head over 64 KiB")
)

// head is what relaying needs to know of one message head.
type head struct {
	// status is a response's status code; 0 for a request.
	status int
	// isHEAD: the request's method is HEAD (its response has no body).
	isHEAD bool
	// contentLength is the body's length in bytes; -1 when not given.
	contentLength int64
	// chunked: Transfer-Encoding is chunked, passed through verbatim.
	chunked bool
	// close: the sender asked for the connection to end after this
	// exchange (Connection: close, or HTTP/1.0 without keep-alive).
	close bool
}

// hopHeaders are the hop-by-hop fields a proxy removes: those
// proxy/hop's RemoveHeaders removes (RFC 9110 §7.6.1, Proxy-Connection,
// Keep-Alive, and the proxy's own authentication fields), in lower case,
// except Transfer-Encoding: chunked bodies are passed through as they
// came. TestHopHeadersAsProxyHop holds the two lists together.
var hopHeaders = []string{"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade"}

// appendHead parses the message head b (start line through the blank
// line, CRLF line ends) and appends it to dst with hop-by-hop headers,
// and those the Connection header names, removed. It returns the
// extended dst and what framing the head declared; errors are
// errMalformed, errUnsupported or errHeadTooBig (never a partial dst:
// on error dst is returned as it came).
func appendHead(dst, b []byte, isReq bool) ([]byte, head, error) {
	h := head{contentLength: -1}
	start, rest, ok := cutCRLF(b)
	if !ok {
		return dst, h, errMalformed
	}
	http10, err := parseStart(start, isReq, &h)
	if err != nil {
		return dst, h, err
	}
	var lines [maxHeaders][2]int // [start, colon] of each header line in rest
	var drop [8][]byte           // names the Connection header lists
	ndrop, n := 0, 0
	keepAlive := false
	for off := 0; ; {
		line, _, ok := cutCRLF(rest[off:])
		if !ok {
			return dst, h, errMalformed
		}
		if len(line) == 0 {
			break
		}
		if n == maxHeaders {
			return dst, h, errMalformed
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return dst, h, errMalformed // also obs-fold: a line starting with SP or HTAB
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return dst, h, errMalformed // RFC 9110 §5.5: no CTLs in a field value
			}
		}
		switch {
		case equalFold(name, "content-length"):
			if h.contentLength >= 0 || len(value) == 0 || len(value) > 18 {
				return dst, h, errMalformed
			}
			var v int64
			for _, c := range value {
				if c < '0' || c > '9' {
					return dst, h, errMalformed
				}
				v = v*10 + int64(c-'0')
			}
			h.contentLength = v
		case equalFold(name, "transfer-encoding"):
			if h.chunked || !equalFold(value, "chunked") {
				return dst, h, errUnsupported
			}
			h.chunked = true
		case equalFold(name, "connection"):
			for _, tok := range bytes.Split(value, []byte{','}) {
				tok = trimOWS(tok)
				switch {
				case len(tok) == 0:
				case equalFold(tok, "close"):
					h.close = true
				case equalFold(tok, "keep-alive"):
					keepAlive = true
				case equalFold(tok, "upgrade"):
					return dst, h, errUnsupported
				case equalFold(tok, "content-length"), equalFold(tok, "transfer-encoding"), equalFold(tok, "host"):
					// Dropping these would frame (or route) the message
					// differently at the next hop than here: refused.
					return dst, h, errMalformed
				case ndrop == len(drop):
					return dst, h, errMalformed
				default:
					drop[ndrop] = tok
					ndrop++
				}
			}
		}
		lines[n] = [2]int{off, off + colon}
		n++
		off += len(line) + 2
	}
	if h.chunked && (h.contentLength >= 0 || http10) {
		return dst, h, errMalformed // RFC 9112 §6.3 (both) and §6.1 (chunked in HTTP/1.0): faulty framing
	}
	if http10 && !keepAlive {
		h.close = true
	}
	dst = append(dst, start...)
	dst = append(dst, '\r', '\n')
	for _, l := range lines[:n] {
		name := rest[l[0]:l[1]]
		if isHop(name, drop[:ndrop]) {
			continue
		}
		end := l[0] + bytes.Index(rest[l[0]:], crlf) + 2
		dst = append(dst, rest[l[0]:end]...)
	}
	return append(dst, '\r', '\n'), h, nil
}

// parseStart checks a request line (method SP target SP HTTP/1.x) or a
// status line (HTTP/1.x SP 3DIGIT SP reason) and fills h; it reports
// whether the version is HTTP/1.0.
func parseStart(line []byte, isReq bool, h *head) (http10 bool, err error) {
	if isReq {
		sp1 := bytes.IndexByte(line, ' ')
		sp2 := bytes.LastIndexByte(line, ' ')
		if sp1 <= 0 || sp2 <= sp1+1 || !isToken(line[:sp1]) {
			return false, errMalformed
		}
		method, version := line[:sp1], line[sp2+1:]
		if string(method) == "CONNECT" {
			return false, errUnsupported
		}
		target := line[sp1+1 : sp2]
		for _, c := range target {
			if c <= ' ' || c >= 0x7f {
				return false, errMalformed // RFC 9112 §3.2: the target is visible ASCII
			}
		}
		// RFC 9112 §3.2: origin-form, absolute-form (http and https
		// only here), or asterisk-form; authority-form is CONNECT's.
		if target[0] != '/' && string(target) != "*" && !bytes.HasPrefix(target, []byte("http://")) && !bytes.HasPrefix(target, []byte("https://")) {
			return false, errMalformed
		}
		h.isHEAD = string(method) == "HEAD"
		http10, err := parseVersion(version)
		if http10 {
			// A proxy sends its own version (RFC 9110 §6.2), and an
			// HTTP/1.0 client cannot take a chunked answer: re-framing
			// is more than the prototype does.
			return false, errUnsupported
		}
		return http10, err
	}
	if len(line) < 12 || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return false, errMalformed
	}
	http10, err = parseVersion(line[:8])
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return false, errMalformed
		}
		h.status = h.status*10 + int(c-'0')
	}
	if h.status < 100 {
		return false, errMalformed
	}
	return http10, err
}

func parseVersion(v []byte) (http10 bool, err error) {
	switch string(v) {
	case "HTTP/1.1":
		return false, nil
	case "HTTP/1.0":
		return true, nil
	}
	return false, errMalformed
}

// chunkSize parses a chunk-size line without its CRLF (RFC 9112 §7.1):
// hex digits, then optionally ";" and extensions, passed through unread.
// Whitespace around the size is refused, as net/http refuses it.
func chunkSize(line []byte) (int64, error) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	if len(line) == 0 || len(line) > 15 {
		return 0, fmt.Errorf("%w: chunk size %q", errMalformed, line)
	}
	var v int64
	for _, c := range line {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | int64(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | int64(c-'a'+10)
		case c >= 'A' && c <= 'F':
			v = v<<4 | int64(c-'A'+10)
		default:
			return 0, fmt.Errorf("%w: chunk size %q", errMalformed, line)
		}
	}
	return v, nil
}

// checkTrailer checks one trailer field line (without its CRLF): a
// token name and a value without CTLs, and not a field that frames,
// routes or is hop-by-hop (RFC 9110 §6.5.1), which is refused rather
// than forwarded.
func checkTrailer(line []byte) error {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !isToken(line[:colon]) {
		return errMalformed
	}
	name := line[:colon]
	if isHop(name, nil) || equalFold(name, "content-length") || equalFold(name, "transfer-encoding") || equalFold(name, "host") {
		return errMalformed
	}
	for _, c := range line[colon+1:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return errMalformed
		}
	}
	return nil
}

var crlf = []byte("\r\n")

// cutCRLF splits b at its first CRLF; a bare LF is malformed.
func cutCRLF(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i <= 0 || b[i-1] != '\r' {
		return nil, nil, false
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+1:], true
}

func isHop(name []byte, named [][]byte) bool {
	for _, h := range hopHeaders {
		if equalFold(name, h) {
			return true
		}
	}
	for _, n := range named {
		if len(n) == len(name) && equalFold(name, string(n)) {
			return true
		}
	}
	return false
}

// isToken reports whether b is an RFC 9110 §5.6.2 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold compares ASCII case-insensitively.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}
