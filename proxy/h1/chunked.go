package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
)

// chunkedBody reads a chunked body (RFC 9112 §7.1) strictly: a chunk size
// is 1 to 15 hex digits and nothing else (no "0x", sign, or whitespace),
// extensions follow the grammar, chunk data ends in CRLF, and trailer
// fields are well-formed and none of those that frame, route or
// authenticate a message. Any fault is an ErrFraming, and sticks: the
// body never ends as if it were complete.
type chunkedBody struct {
	br      *bufio.Reader
	trailer *http.Header // where trailer fields go (the message's Trailer)
	n       int64        // data left in the current chunk
	state   uint8
	err     error
}

const (
	chunkSize = iota // next: a chunk-size line
	chunkData
	chunkEnd // next: the CRLF after a chunk's data
	chunkDone
)

// Limits of a chunked body's framing.
const (
	maxChunkSizeDigits = 15       // 2^60 bytes: no overflow of int64
	maxTrailerBytes    = 64 << 10 // all trailer lines together
)

// forbiddenTrailers frame, route, authenticate or control a message and
// may not come in a trailer (RFC 9110 §6.5.1); the last is the identity
// header the mesh sets for the app, which only the mesh may write.
var forbiddenTrailers = map[string]bool{
	"Transfer-Encoding": true, "Content-Length": true, "Trailer": true, "Host": true,
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true, "Upgrade": true,
	"Expect": true, "Max-Forwards": true, "Range": true, "If-Match": true, "If-None-Match": true,
	"If-Modified-Since": true, "If-Unmodified-Since": true, "If-Range": true,
	"Authorization": true, "Proxy-Authorization": true, "Www-Authenticate": true, "Proxy-Authenticate": true,
	"Cookie": true, "Set-Cookie": true, "Content-Type": true, "Content-Encoding": true, "Content-Range": true,
	"Cache-Control": true, "Location": true, "Retry-After": true, "Vary": true,
	"X-Forwarded-Client-Cert": true,
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	for b.state != chunkData {
		var err error
		switch b.state {
		case chunkDone:
			return 0, io.EOF
		case chunkEnd:
			err = b.crlf()
		case chunkSize:
			err = b.sizeLine()
		}
		if err != nil {
			b.err = err
			return 0, err
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	if b.n == 0 {
		b.state = chunkEnd
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// Close is a no-op: the server or client owning the connection decides
// what happens to an unread rest.
func (b *chunkedBody) Close() error { return nil }

// begin reads the first chunk-size line (and, for an empty body, the
// trailers), so a malformed start is refused before the request goes on.
func (b *chunkedBody) begin() error {
	if b.state == chunkSize && b.err == nil {
		b.err = b.sizeLine()
	}
	return b.err
}

// check checks the part of the body that has already arrived in br's
// buffer, without consuming it: a small body comes with its head, and is
// then refused whole before anything of it is passed on, rather than cut
// off after. A fault further on is still found while streaming.
func (b *chunkedBody) check() error {
	if b.err != nil || b.state == chunkDone {
		return b.err
	}
	buf, _ := b.br.Peek(b.br.Buffered())
	if len(buf) == 0 {
		return nil
	}
	// Never larger than the buffer: a line too long here is one there.
	dry := chunkedBody{br: bufio.NewReaderSize(bytes.NewReader(buf), len(buf)+16), trailer: new(http.Header), n: b.n, state: b.state}
	if _, err := io.Copy(io.Discard, &dry); err != nil && errors.Is(err, ErrFraming) {
		b.err = err
		return err
	}
	return nil
}

func (b *chunkedBody) crlf() error {
	c1, err := b.br.ReadByte()
	if err == nil {
		var c2 byte
		if c2, err = b.br.ReadByte(); err == nil && (c1 != '\r' || c2 != '\n') {
			return framingError("chunk data not followed by CRLF")
		}
	}
	if err != nil {
		return noEOF(err)
	}
	b.state = chunkSize
	return nil
}

// line reads one CRLF-ended line, without the CRLF, valid until the next
// read.
func (b *chunkedBody) line(what string) ([]byte, error) {
	line, err := b.br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		return nil, framingError("%s line too long", what)
	case err != nil:
		return nil, noEOF(err)
	case len(line) < 2 || line[len(line)-2] != '\r':
		return nil, framingError("%s line not ended by CRLF", what)
	}
	return line[:len(line)-2], nil
}

func (b *chunkedBody) sizeLine() error {
	line, err := b.line("chunk-size")
	if err != nil {
		return err
	}
	n, err := ParseChunkSize(line)
	if err != nil {
		return err
	}
	if n > 0 {
		b.n, b.state = n, chunkData
		return nil
	}
	if err := b.trailers(); err != nil {
		return err
	}
	b.state = chunkDone
	return nil
}

func (b *chunkedBody) trailers() error {
	total := 0
	for {
		line, err := b.line("trailer")
		if err != nil {
			return err
		}
		if total += len(line) + 2; total > maxTrailerBytes {
			return framingError("trailers over %d bytes", maxTrailerBytes)
		}
		if len(line) == 0 {
			return nil
		}
		key, value, err := trailerField(line)
		if err != nil {
			return err
		}
		if *b.trailer == nil {
			*b.trailer = http.Header{}
		}
		(*b.trailer)[key] = append((*b.trailer)[key], string(value))
	}
}

// ParseChunkSize reads a chunk-size line without its CRLF (RFC 9112
// §7.1): 1 to 15 hex digits and nothing else (no "0x", sign or
// whitespace), then extensions that follow the grammar exactly, which are
// not otherwise read. Errors wrap ErrFraming.
func ParseChunkSize(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		if i == maxChunkSizeDigits {
			return 0, framingError("chunk size over %d hex digits", maxChunkSizeDigits)
		}
		n = n<<4 | int64(d)
	}
	if i == 0 {
		return 0, framingError("chunk size %.20q is not hex digits", line)
	}
	if !chunkExtOK(line[i:]) {
		return 0, framingError("malformed chunk extension %.40q", line[i:])
	}
	return n, nil
}

// CheckTrailer checks one trailer field line without its CRLF: a field
// line as in a head, and not one of the fields that frame, route,
// authenticate or control a message (forbiddenTrailers), which is refused
// rather than forwarded. Errors wrap ErrFraming.
func CheckTrailer(line []byte) error {
	_, _, err := trailerField(line)
	return err
}

// trailerField splits a trailer line as CheckTrailer checks it, returning
// the field's canonical name and its value.
func trailerField(line []byte) (key string, value []byte, err error) {
	if len(line) == 0 {
		return "", nil, framingError("empty trailer line")
	}
	name, value, err := splitField(line)
	if err != nil {
		return "", nil, err
	}
	key = textproto.CanonicalMIMEHeaderKey(string(name))
	if forbiddenTrailers[key] {
		return "", nil, framingError("trailer field %s not allowed", key)
	}
	return key, value, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// chunkExtOK: *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
// (RFC 9112 §7.1.1), exactly.
func chunkExtOK(ext []byte) bool {
	bws := func() {
		for len(ext) > 0 && (ext[0] == ' ' || ext[0] == '\t') {
			ext = ext[1:]
		}
	}
	token := func() bool {
		i := 0
		for i < len(ext) && isToken(ext[i:i+1]) {
			i++
		}
		ext = ext[i:]
		return i > 0
	}
	for len(ext) > 0 {
		bws()
		if len(ext) == 0 || ext[0] != ';' {
			return false
		}
		ext = ext[1:]
		bws()
		if !token() {
			return false
		}
		save := ext
		bws()
		if len(ext) == 0 || ext[0] != '=' {
			ext = save
			continue
		}
		ext = ext[1:]
		bws()
		if len(ext) > 0 && ext[0] == '"' {
			if ext = quoted(ext[1:]); ext == nil {
				return false
			}
		} else if !token() {
			return false
		}
	}
	return true
}

// quoted consumes the rest of a quoted-string after its opening quote and
// returns what follows it, or nil if it is malformed.
func quoted(s []byte) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return s[i+1:]
		case c == '\\':
			if i++; i == len(s) || s[i] < ' ' && s[i] != '\t' || s[i] == 0x7f {
				return nil
			}
		case c < ' ' && c != '\t' || c == 0x7f:
			return nil
		}
	}
	return nil
}
