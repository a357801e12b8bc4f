package h1

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// response is the http.ResponseWriter of one request. A body written
// before the handler returns and smaller than bodyBuffer goes out with a
// Content-Length, in the same write as the headers; a larger one, or one
// flushed early, is chunked.
type response struct {
	sc     *serverConn
	req    *http.Request
	header http.Header

	status      int
	wroteHeader bool // WriteHeader called (status fixed)
	committed   bool // status line and headers are in the writer
	chunked     bool
	noBody      bool // HEAD, 204, 304
	declared    []string
	length      int64 // Content-Length the handler set, or -1
	written     int64
	body        []byte // body held until commit
	hijacked    bool
	closeAfter  bool
	rejected    bool // the request body's framing failed: 400, whatever the handler says
}

// bodyBuffer is how much of a body is held to compute its length.
const bodyBuffer = 16 << 10

var bodies = sync.Pool{New: func() any { b := make([]byte, 0, bodyBuffer); return &b }}

// newResponse starts the response to req, in the connection's spare
// response (and its emptied header map) when the previous exchange left
// one: a keep-alive connection then allocates neither per request.
func newResponse(sc *serverConn, req *http.Request) *response {
	var w *response
	if w = sc.spare; w != nil {
		sc.spare = nil
		h := w.header
		clear(h)
		*w = response{sc: sc, req: req, header: h, length: -1}
	} else {
		w = &response{sc: sc, req: req, header: make(http.Header, 8), length: -1}
	}
	w.closeAfter = req.Close || req.ProtoMajor < 1 || (req.ProtoMajor == 1 && req.ProtoMinor == 0 && !strings.EqualFold(req.Header.Get("Connection"), "keep-alive"))
	if req.Body != nil && req.Body != http.NoBody && strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		req.Body = &continueReader{r: req.Body, w: sc.bw}
	}
	req.Header.Del("Expect")
	return w
}

// continueReader sends "100 Continue" when the handler first reads the
// body, unless the final response has started (late is the one thing
// 100 Continue may not be).
type continueReader struct {
	r    io.ReadCloser
	w    *bufio.Writer
	sent bool
	late bool
}

func (c *continueReader) Read(p []byte) (int, error) {
	if !c.sent && !c.late {
		c.sent = true
		c.w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := c.w.Flush(); err != nil {
			return 0, err
		}
	}
	return c.r.Read(p)
}

func (c *continueReader) Close() error { return c.r.Close() }

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.wroteHeader || w.hijacked {
		return
	}
	if code < 100 || code > 999 {
		panic("h1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Informational: sent at once, the final status follows.
		w.sc.bw.WriteString("HTTP/1.1 " + strconv.Itoa(code) + " " + statusText(code) + "\r\n")
		w.header.Write(w.sc.bw)
		w.sc.bw.WriteString("\r\n")
		w.sc.bw.Flush()
		return
	}
	if w.sc.badBody.Load() {
		w.reject()
		return
	}
	w.wroteHeader, w.status = true, code
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.length = n
		} else {
			w.header.Del("Content-Length")
		}
	}
	for _, v := range w.header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				w.declared = append(w.declared, http.CanonicalHeaderKey(k))
			}
		}
	}
}

// reject replaces the handler's answer by 400: the request's body broke
// its framing (ErrFraming) before the handler answered, so what it made of
// the request (typically a failed upstream) is not the caller's answer,
// and the connection ends (RFC 9112 §6.3).
func (w *response) reject() {
	w.wroteHeader, w.status, w.rejected, w.closeAfter = true, http.StatusBadRequest, true, true
	w.header = http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
	w.length = -1
	w.putBody()
	w.body = append((*bodies.Get().(*[]byte))[:0], "400 Bad Request: malformed request body framing\n"...)
}

func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.rejected {
		return len(p), nil
	}
	if w.noBody {
		return 0, http.ErrBodyNotAllowed
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.committed {
		if w.length >= 0 {
			w.commit(false)
			return w.sc.bw.Write(p)
		}
		if len(w.body)+len(p) <= bodyBuffer {
			if w.body == nil {
				w.body = (*bodies.Get().(*[]byte))[:0]
			}
			w.body = append(w.body, p...)
			return len(p), nil
		}
		w.commit(true)
	}
	if w.chunked {
		return len(p), w.writeChunk(p)
	}
	return w.sc.bw.Write(p)
}

func (w *response) writeChunk(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	bw := w.sc.bw
	bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
	bw.WriteString("\r\n")
	bw.Write(p)
	_, err := bw.WriteString("\r\n")
	return err
}

// commit writes the status line and headers. chunked: the length is
// unknown (or trailers follow); HTTP/1.0 callers get the body up to close.
func (w *response) commit(chunked bool) {
	if w.committed {
		return
	}
	w.committed = true
	h := w.header
	if w.noBody || w.rejected {
		chunked = false
	}
	if w.length < 0 && !w.noBody && w.status >= 200 {
		if chunked || len(w.declared) > 0 {
			if w.req.ProtoMinor == 0 {
				w.closeAfter = true
			} else {
				w.chunked = true
				h.Set("Transfer-Encoding", "chunked")
			}
		} else {
			h.Set("Content-Length", strconv.Itoa(len(w.body)))
		}
	}
	if b := w.sc.body; b != nil && !b.drainable(w.req.ContentLength) {
		w.closeAfter = true
	}
	if cr, ok := w.req.Body.(*continueReader); ok && !cr.sent {
		// The client may be holding the body back: after this response
		// the connection's framing is unknown, so it ends.
		cr.late, w.closeAfter = true, true
	}
	if w.closeAfter || w.sc.s.shutdown.Load() {
		w.closeAfter = true
		h.Set("Connection", "close")
	}
	bw := w.sc.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(w.status))
	bw.WriteByte(' ')
	bw.WriteString(statusText(w.status))
	bw.WriteString("\r\n")
	for k, vs := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || k == "Trailer" && !w.chunked {
			continue
		}
		for _, v := range vs {
			writeField(bw, k, headerValue(v))
		}
	}
	bw.WriteString("\r\n")
	if len(w.body) > 0 {
		if w.chunked {
			w.writeChunk(w.body)
		} else if !w.noBody {
			bw.Write(w.body)
		}
	}
	w.putBody()
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "status code " + strconv.Itoa(code)
}

// writeField writes one header or trailer line.
func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// headerValue keeps a value on its line: CR and LF become spaces, as
// net/http's header writer does.
func headerValue(v string) string {
	if strings.ContainsAny(v, "\r\n") {
		return strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	return v
}

func (w *response) putBody() {
	if w.body != nil {
		b := w.body[:0]
		bodies.Put(&b)
		w.body = nil
	}
}

// Flush sends what is written so far; the body is chunked from here on.
func (w *response) Flush() {
	w.FlushError()
}

// FlushError is Flush reporting the write error (http.ResponseController).
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.commit(true)
	return w.sc.bw.Flush()
}

// finish completes the response: headers if not yet sent, the last chunk
// and trailers, then one flush.
func (w *response) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.commit(false)
	if w.length >= 0 && w.written < w.length && !w.noBody {
		// The handler promised more than it wrote: the framing is broken.
		w.closeAfter = true
		w.sc.bw.Flush()
		return io.ErrShortWrite
	}
	if w.chunked {
		bw := w.sc.bw
		bw.WriteString("0\r\n")
		for _, k := range w.declared {
			for _, v := range w.header[k] {
				writeField(bw, k, headerValue(v))
			}
		}
		for k, vs := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				for _, v := range vs {
					writeField(bw, http.CanonicalHeaderKey(name), headerValue(v))
				}
			}
		}
		bw.WriteString("\r\n")
	}
	return w.sc.bw.Flush()
}

// Hijack hands the connection to the handler (WebSocket, CONNECT).
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.committed {
		return nil, nil, errors.New("h1: hijack after the response started")
	}
	w.hijacked = true
	w.putBody()
	c := w.sc.c
	w.sc.lr.cancel()
	c.SetDeadline(time.Time{})
	return c, bufio.NewReadWriter(w.sc.br, w.sc.bw), nil
}

// SetReadDeadline and SetWriteDeadline serve http.ResponseController.
func (w *response) SetReadDeadline(t time.Time) error  { return w.sc.lr.set(t) }
func (w *response) SetWriteDeadline(t time.Time) error { return w.sc.c.SetWriteDeadline(t) }
