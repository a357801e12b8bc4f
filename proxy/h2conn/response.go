package h2conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// request builds the http.Request of a stream from its header block,
// refusing what RFC 9113 section 8.3 calls malformed.
func (sc *serverConn) request(s *stream, f *http2.MetaHeadersFrame) (*http.Request, error) {
	method, path := f.PseudoValue("method"), f.PseudoValue("path")
	scheme, authority := f.PseudoValue("scheme"), f.PseudoValue("authority")
	fields := f.RegularFields()
	// Built here and copied once with its context (WithContext), so
	// that it costs one allocation.
	req := http.Request{Method: method, Proto: "HTTP/2.0", ProtoMajor: 2, Header: make(http.Header, len(fields)),
		RemoteAddr: sc.remoteAddr, TLS: sc.tls, ContentLength: -1}
	vals := make([]string, len(fields)) // see headerMap
	switch {
	case method == "":
		return nil, errors.New("h2conn: request without :method")
	case method == "CONNECT":
		if path != "" || scheme != "" || authority == "" {
			return nil, errors.New("h2conn: CONNECT needs :authority and no :path or :scheme")
		}
		req.URL, req.RequestURI = &url.URL{Host: authority}, authority
	default:
		if path == "" || scheme == "" {
			return nil, errors.New("h2conn: request without :path or :scheme")
		}
		u, err := url.ParseRequestURI(path)
		if err != nil {
			return nil, fmt.Errorf("h2conn: bad :path: %w", err)
		}
		req.URL, req.RequestURI = u, path
	}
	for i, hf := range fields {
		switch hf.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return nil, fmt.Errorf("h2conn: connection-specific header %q", hf.Name)
		case "te":
			if hf.Value != "trailers" {
				return nil, errors.New("h2conn: te other than trailers")
			}
		case "cookie":
			// Split crumbs are joined again (RFC 9113, section 8.2.3).
			if c := req.Header["Cookie"]; len(c) == 1 {
				c[0] += "; " + hf.Value
				continue
			}
		case "content-length":
			n, err := strconv.ParseInt(hf.Value, 10, 64)
			if err != nil || n < 0 || req.ContentLength >= 0 && req.ContentLength != n {
				return nil, errors.New("h2conn: bad content-length")
			}
			req.ContentLength = n
		case "host":
			if authority == "" {
				authority = hf.Value
			}
			continue
		}
		addField(req.Header, vals, i, canonicalKey(hf.Name), hf.Value)
	}
	req.Host = authority
	req.Trailer = declaredTrailers(req.Header)
	ctx, cancel := context.WithCancel(sc.ctx)
	r := req.WithContext(ctx)
	sc.mu.Lock()
	s.cancel = cancel
	if r.Trailer != nil {
		s.trailerTo = &r.Trailer
	}
	ended := s.remoteEnd
	if s.failed {
		cancel()
	}
	sc.mu.Unlock()
	if ended {
		if r.ContentLength > 0 {
			return nil, errors.New("h2conn: content-length without a body")
		}
		r.ContentLength, r.Body = 0, http.NoBody
	} else {
		s.expect = strings.EqualFold(r.Header.Get("Expect"), "100-continue")
		r.Body = (*requestBody)(s)
	}
	return r, nil
}

// requestBody is a request's body as the handler reads it (its stream,
// so that it costs no allocation of its own); its first read sends 100
// Continue to a client that asked for it.
type requestBody stream

func (b *requestBody) Read(p []byte) (int, error) {
	s := (*stream)(b)
	if s.expect {
		s.expect = false
		c := s.c
		c.mu.Lock()
		if !s.headQueued && s.sendErr == nil {
			c.w.enqueue(frame{kind: kHeaders, stream: s.id, fields: []hpack.HeaderField{{Name: ":status", Value: "100"}}})
		}
		c.mu.Unlock()
	}
	return s.read(p)
}

// Received reports whether the whole body has arrived (the proxy's body
// rate watch skips such bodies).
func (b *requestBody) Received() bool {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	return b.remoteEnd
}

// Close stops nothing: the stream's window is returned when the handler
// returns (the rest of the body is refused with RST_STREAM NO_ERROR).
func (b *requestBody) Close() error { return nil }

// responseWriter gathers a handler's response: the head and the body
// written before the handler returns or flushes leave together.
type responseWriter struct {
	s      *stream
	req    *http.Request
	h      http.Header
	status int
	sent   bool // the head is queued
	buf    []byte
	err    error
	// deadline resets the stream at the handler's read deadline.
	deadline *time.Timer
}

var _ http.Flusher = (*responseWriter)(nil)

// SetReadDeadline bounds the reading of the request body
// (http.ResponseController): when t passes, the stream is reset with
// CANCEL and the body's reads fail with os.ErrDeadlineExceeded, as with
// Go's HTTP/2 server. The zero time removes the bound.
func (w *responseWriter) SetReadDeadline(t time.Time) error {
	if w.deadline != nil {
		w.deadline.Stop()
		w.deadline = nil
	}
	if t.IsZero() {
		return nil
	}
	s := w.s
	w.deadline = time.AfterFunc(time.Until(t), func() { s.c.cancel(s, os.ErrDeadlineExceeded) })
	return nil
}

func (w *responseWriter) Header() http.Header { return w.h }

func (w *responseWriter) WriteHeader(code int) {
	if w.status != 0 || code < 100 || code > 999 {
		return
	}
	if code < 200 {
		if code == http.StatusSwitchingProtocols {
			return // no upgrades in HTTP/2 (RFC 9113, section 8.6)
		}
		fields := headerFields([]hpack.HeaderField{{Name: ":status", Value: statusCode(code)}}, w.h)
		c := w.s.c
		c.mu.Lock()
		if !w.s.headQueued {
			c.w.enqueue(frame{kind: kHeaders, stream: w.s.id, fields: fields})
		}
		c.mu.Unlock()
		return
	}
	w.status = code
}

func (w *responseWriter) Write(p []byte) (int, error) { return writeBody(w, p) }

func (w *responseWriter) WriteString(s string) (int, error) { return writeBody(w, s) }

// writeBody is Write and WriteString: p joins the buffered body, sent as
// DATA once it holds dataChunk bytes (generic so a string is not copied
// to a []byte first), or, when larger than that, is sent from the
// caller's slice.
func writeBody[T string | []byte](w *responseWriter, p T) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) || w.req != nil && w.req.Method == http.MethodHead {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if b, ok := any(p).([]byte); ok && len(b) > dataChunk {
		// A large write is lent to the writer uncopied (stream.send)
		// once what was buffered before it has gone.
		if len(w.buf) > 0 || !w.sent {
			if err := w.flush(false); err != nil {
				return 0, err
			}
		}
		if err := w.s.send(nil, b, nil, false); err != nil {
			w.err = err
			return 0, err
		}
		return len(b), nil
	}
	// Smaller writes fill the pooled chunk, which never grows past it.
	n := len(p)
	for len(p) > 0 {
		w.grow()
		k := min(len(p), dataChunk-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == dataChunk {
			if err := w.flush(false); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// Flush sends the head and what the body has so far.
func (w *responseWriter) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.flush(false)
}

// flush queues the head (once), the buffered body and, with end, the
// trailers; a body sent whole with the head and no trailers gets its
// Content-Length.
func (w *responseWriter) flush(end bool) error {
	if w.err != nil {
		return w.err
	}
	var tf []hpack.HeaderField
	if end {
		tf = w.trailerFields()
	}
	var head, tail *frame
	if !w.sent {
		w.sent = true
		fields := make([]hpack.HeaderField, 1, 2+len(w.h))
		fields[0] = hpack.HeaderField{Name: ":status", Value: statusCode(w.status)}
		fields = headerFields(fields, w.h)
		if end && tf == nil && bodyAllowed(w.status) && w.req != nil && w.req.Method != http.MethodHead && len(w.h["Content-Length"]) == 0 {
			fields = append(fields, hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(w.buf))})
		}
		head = &frame{kind: kHeaders, stream: w.s.id, fields: fields}
	}
	if len(tf) > 0 {
		tail = &frame{kind: kHeaders, stream: w.s.id, fields: tf}
	}
	err := w.s.send(head, w.buf, tail, end)
	w.buf = w.buf[:0]
	w.err = err
	return err
}

// finish ends the response when the handler returns.
func (w *responseWriter) finish() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	err := w.flush(true)
	putData(w.buf)
	w.buf = nil
	return err
}

// grow makes room in the body buffer, taken from the pool the first time.
func (w *responseWriter) grow() {
	if w.buf == nil {
		w.buf = getData(nil)
	}
}

// trailerFields are the trailers the handler set: keys it declared in a
// Trailer header, and keys with http.TrailerPrefix.
func (w *responseWriter) trailerFields() []hpack.HeaderField {
	var fs []hpack.HeaderField
	for _, v := range w.h["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			for _, tv := range w.h[k] {
				fs = append(fs, hpack.HeaderField{Name: lowerHeader(k), Value: tv})
			}
		}
	}
	for k, vs := range w.h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			for _, v := range vs {
				fs = append(fs, hpack.HeaderField{Name: lowerHeader(name), Value: v})
			}
		}
	}
	return fs
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

var _ io.ReadCloser = (*requestBody)(nil)
