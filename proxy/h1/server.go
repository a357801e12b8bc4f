// Package h1 is the sidecar's HTTP/1.1 hot path: a server loop and a
// client connection pool that each keep one goroutine per connection and
// answer a request with one write.
//
// net/http's server starts a background read goroutine for every request
// and its transport hands every request to a write loop and every response
// back from a read loop; on a 2-core machine those hand-offs, not the
// parsing, were most of the sidecar's cost. Here a connection's goroutine
// reads a request, runs the handler and writes the response, headers and a
// buffered body together, then reads the next. The common message heads
// are parsed and written here with few allocations; everything else goes
// to the strict path (strict.go: net/http parses the head once it is
// checked, bodies are framed here; ambiguous framing is refused, RFC 9112)
// or to Request.Write.
// Handlers are ordinary http.Handlers, so routing code is shared with the
// HTTP/2 path.
// See bench/README.md for the figures.
package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves HTTP/1.1 on connections handed to it by Serve.
type Server struct {
	Handler           http.Handler
	ReadHeaderTimeout time.Duration // time to read a request's headers
	IdleTimeout       time.Duration // time to wait for the next request
	MaxHeaderBytes    int
	// ErrorLog gets handler panics (other than http.ErrAbortHandler), as
	// net/http's does; nil discards.
	ErrorLog *log.Logger

	mu       sync.Mutex
	conns    map[*serverConn]struct{}
	shutdown atomic.Bool
}

// Defaults when a Server's fields are zero.
const (
	defaultMaxHeaderBytes = 64 << 10
	defaultHeaderTimeout  = 10 * time.Second
	defaultIdleTimeout    = 2 * time.Minute
	maxDrainBody          = 256 << 10 // unread request body drained to keep a connection
	bufSize               = 4 << 10
)

// serverConn is one connection being served.
type serverConn struct {
	s      *Server
	c      net.Conn
	lr     *limitReader
	br     *bufio.Reader
	bw     *bufio.Writer
	active atomic.Bool // between reading a request and finishing its response
	closed atomic.Bool
	// badBody: the request's body broke its framing (ErrFraming); the
	// answer is 400 (response.reject) and the connection ends.
	badBody atomic.Bool
	body    *guardedBody // the current request's, nil if it has none
	spare   *response    // the last exchange's, for the next to reuse
	// linger: the connection ends while the peer may still be sending
	// (an unread body, a refused request): close with lingerClose.
	linger bool
}

// limitReader bounds how much a header read may consume, and sets the
// connection's read deadline that the server loop left pending (later)
// before it reads: a request whose head and body are already buffered
// needs no deadline change of its own (deadline.go).
type limitReader struct {
	r io.Reader
	n int64 // < 0: no limit
	lazyDeadline
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.pending.Load() {
		if err := l.apply(); err != nil {
			return 0, err
		}
	}
	if l.n == 0 {
		return 0, ErrHeaderTooLarge
	}
	if l.n > 0 && int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	if l.n > 0 {
		l.n -= int64(n)
	}
	return n, err
}

// ErrHeaderTooLarge is a request head over the server's MaxHeaderBytes,
// or a relay's limit: answered 431 (RFC 6585 §5).
var ErrHeaderTooLarge = errors.New("h1: request headers too large")

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}
)

// Serve serves requests on c until the peer closes it, a request asks to
// close, an error or a timeout. ctx is the parent of every request's
// context. Serve closes c unless a handler hijacked it.
func (s *Server) Serve(ctx context.Context, c net.Conn) {
	sc := &serverConn{s: s, c: c, lr: &limitReader{r: c, n: -1, lazyDeadline: lazyDeadline{c: c}}}
	sc.br = readers.Get().(*bufio.Reader)
	sc.br.Reset(sc.lr)
	sc.bw = writers.Get().(*bufio.Writer)
	sc.bw.Reset(c)
	if !s.track(sc, true) {
		c.Close()
		return
	}
	hijacked := sc.serve(ctx)
	s.track(sc, false)
	if !hijacked {
		if sc.linger {
			lingerClose(c)
		} else {
			c.Close()
		}
		sc.br.Reset(nil)
		readers.Put(sc.br)
		sc.bw.Reset(nil)
		writers.Put(sc.bw)
	}
}

func (s *Server) track(sc *serverConn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, sc)
		return true
	}
	if s.shutdown.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = map[*serverConn]struct{}{}
	}
	s.conns[sc] = struct{}{}
	return true
}

// Shutdown stops taking requests: idle connections close at once, busy
// ones after their response. It returns when none is left or ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Store(true)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		for sc := range s.conns {
			if !sc.active.Load() && sc.closed.CompareAndSwap(false, true) {
				// Wakes the read of the next request; Serve then closes.
				sc.c.SetReadDeadline(time.Unix(1, 0))
			}
		}
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Server) limits() (maxHeader int, header, idle time.Duration) {
	maxHeader, header, idle = s.MaxHeaderBytes, s.ReadHeaderTimeout, s.IdleTimeout
	if maxHeader <= 0 {
		maxHeader = defaultMaxHeaderBytes
	}
	if header <= 0 {
		header = defaultHeaderTimeout
	}
	if idle <= 0 {
		idle = defaultIdleTimeout
	}
	return
}

// serve is the connection's loop. It reports whether the connection was
// hijacked.
func (sc *serverConn) serve(ctx context.Context) bool {
	maxHeader, headerTimeout, idleTimeout := sc.s.limits()
	var tlsState *tls.ConnectionState
	// A *tls.Conn, or a wrapper of one that says so (proxy/loop's
	// handed-back connections).
	if tc, ok := sc.c.(interface{ ConnectionState() tls.ConnectionState }); ok {
		cs := tc.ConnectionState()
		tlsState = &cs
	}
	remote := sc.c.RemoteAddr().String()
	notAfter := peerNotAfter(sc.c)
	// Requests are served one at a time and nothing watches the
	// connection meanwhile, so there is nothing to cancel: every request's
	// context is ctx, given by a template made once per connection (a
	// copy of the request and a cancel context per request were a good
	// share of the allocations; so was a WithContext copy, once the
	// sidecar's connection contexts carried values: bench/README.md).
	var base *http.Request
	if ctx != context.Background() {
		base = new(http.Request).WithContext(ctx)
	}
	for {
		if sc.s.shutdown.Load() || sc.closed.Load() {
			return false
		}
		// A kept connection serves no request past its peer certificate's
		// expiry: the peer reconnects with its renewed one.
		if !notAfter.IsZero() && !time.Now().Before(notAfter) {
			return false
		}
		// Wait for the next request, then give its headers their own
		// limit: set before the first read of the head that must wait
		// for the peer, none when the head is already buffered.
		sc.lr.set(time.Now().Add(idleTimeout))
		sc.lr.n = int64(maxHeader) + bufSize
		if _, err := sc.br.Peek(1); err != nil {
			return false
		}
		// Checked again once the request came: the wait may have
		// outlasted the certificate.
		if !notAfter.IsZero() && !time.Now().Before(notAfter) {
			return false
		}
		sc.active.Store(true)
		if sc.closed.Load() {
			return false
		}
		sc.lr.later(time.Now().Add(headerTimeout))
		req, err := readRequest(sc.br, base)
		sc.lr.n = -1
		if err == nil {
			err = beginBody(req)
		}
		if err != nil {
			sc.badRequest(err)
			return false
		}
		// The handler's reads of the body have no deadline: cleared
		// before the first of them, if any (the next request's idle
		// deadline replaces it otherwise).
		sc.lr.later(time.Time{})
		sc.badBody.Store(false)
		req.RemoteAddr = remote
		req.TLS = tlsState
		var body *guardedBody // nil for NoBody, which must stay recognisable
		if req.Body != http.NoBody {
			body = &guardedBody{rc: req.Body, bad: &sc.badBody}
			req.Body = body
		}
		sc.body = body
		w := newResponse(sc, req)
		if !sc.handle(w, req) {
			// The handler panicked: the response is in an unknown state.
			body.close()
			sc.linger = !w.hijacked
			return w.hijacked
		}
		if w.hijacked {
			return true
		}
		if err := w.finish(); err != nil || w.closeAfter {
			body.close()
			sc.linger = true
			return false
		}
		// Unread body: drain a little to keep the connection, else close.
		// Either way nothing reads it any more (a transport may still hold
		// it): the connection's reader is about to serve the next request.
		if !body.drainAndClose() {
			sc.linger = true
			return false
		}
		w.putBody()
		// The handler has returned and the response is written: nothing
		// holds w any more (a ResponseWriter is not used after ServeHTTP
		// returns), so the next request on the connection reuses it.
		sc.spare = w
		sc.active.Store(false)
	}
}

// handle runs the handler; a panic ends the connection, not the process
// (httputil.ReverseProxy panics with http.ErrAbortHandler to abort a
// response). It reports whether the handler returned normally.
func (sc *serverConn) handle(w *response, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			ok = false
			if v != http.ErrAbortHandler && sc.s.ErrorLog != nil {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				sc.s.ErrorLog.Printf("h1: panic serving %s: %v\n%s", sc.c.RemoteAddr(), v, buf)
			}
		}
	}()
	sc.s.Handler.ServeHTTP(w, req)
	return true
}

// beginBody reads the first chunk line of a chunked request body and
// checks what else of it has arrived, so a request whose framing is
// malformed from the start (or, if small, anywhere) is refused before the
// handler sends anything on. Not when the client waits for 100 Continue:
// it sends the body only once the handler asks for it.
func beginBody(req *http.Request) error {
	cb, ok := req.Body.(*chunkedBody)
	if !ok || strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		return nil
	}
	if err := cb.begin(); err != nil {
		return err
	}
	return cb.check()
}

// badRequest answers a request that could not be read, as net/http does,
// and has the connection close lingering.
func (sc *serverConn) badRequest(err error) {
	if errors.Is(err, io.EOF) || isTimeout(err) {
		return
	}
	sc.linger = true
	sc.c.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(sc.c, ErrorAnswer(err))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// guardedBody is a request body that stops at the end of its request: a
// reader left holding it (an HTTP/2 transport's body-copying goroutine)
// gets http.ErrBodyReadAfterClose instead of the next request's bytes.
type guardedBody struct {
	mu     sync.Mutex
	rc     io.ReadCloser
	bad    *atomic.Bool // set when the body breaks its framing
	closed bool
	// What the handler has read, for a response that starts before the
	// body is read to its end (drainable); atomic, since the mutex may be
	// held by a read waiting for the peer.
	got atomic.Int64
	eof atomic.Bool
}

// drainable reports whether what is left of a body of length n (-1:
// chunked, unknown) can be drained after the response, so the connection
// can be kept; when not, the response says "Connection: close" (as
// net/http's server does past 256 KiB), and a client does not send its
// next request on a connection about to close.
func (b *guardedBody) drainable(n int64) bool {
	return b.eof.Load() || n >= 0 && n-b.got.Load() <= maxDrainBody
}

func (b *guardedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.rc.Read(p)
	b.got.Add(int64(n))
	if err == io.EOF {
		b.eof.Store(true)
	} else if err != nil && errors.Is(err, ErrFraming) {
		b.bad.Store(true)
	}
	return n, err
}

// Close by the handler is a no-op: the server decides when the body ends.
func (b *guardedBody) Close() error { return nil }

// Received reports whether the whole body has already arrived (it sits in
// the connection's buffer), so reading it cannot wait on the client: a
// rate limit on the body has nothing to watch. Bodies of unknown length
// (chunked) report false.
func (b *guardedBody) Received() bool {
	lb, ok := b.rc.(*lengthBody)
	return ok && lb.received()
}

func (b *guardedBody) close() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// drainAndClose reads what is left, up to maxDrainBody, and closes; it
// reports whether the body ended so the connection can be kept.
func (b *guardedBody) drainAndClose() bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.closed = true
	n, err := io.CopyN(io.Discard, b.rc, maxDrainBody+1)
	return n <= maxDrainBody && (err == nil || err == io.EOF)
}
