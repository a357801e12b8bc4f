package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Client sends requests to one destination over pooled HTTP/1.1
// connections. The caller's goroutine writes the request and reads the
// response itself; nothing runs in the background.
type Client struct {
	// Dial opens a connection, ready for HTTP (TLS already handshaken).
	Dial func(ctx context.Context) (net.Conn, error)
	// MaxIdle bounds the idle connections kept (default 64).
	MaxIdle int
	// IdleTimeout closes connections idle this long (default 90 s, below
	// the servers' 2 minutes so a pooled connection is rarely stale).
	IdleTimeout time.Duration
	// MaxRequestsPerConn closes a connection after this many requests
	// (DestinationRule maxRequestsPerConnection); 0 is unlimited.
	MaxRequestsPerConn int
	// ProtocolError, if set, is told of every connection closed because
	// the peer broke HTTP/1.1 framing, with one of the Reason values.
	ProtocolError func(reason string)
	// Retried, if set, is told of each request sent again on a new
	// connection because a kept one failed before the server could have
	// processed it (ReasonNotSent, ReasonClosedIdle; see retryable).
	Retried func(reason string)

	mu     sync.Mutex
	idle   []*clientConn // most recently used last
	closed bool
}

// Reasons a request was sent again (Retried).
const (
	// ReasonNotSent: nothing of the request reached the connection.
	ReasonNotSent = "not_sent"
	// ReasonClosedIdle: the server closed a kept connection before any
	// byte of an answer to an idempotent request.
	ReasonClosedIdle = "closed_idle"
)

// Reasons a connection was closed for a protocol error (ProtocolError).
const (
	// ReasonMalformedResponse: a response head or body whose framing was
	// refused (ErrFraming).
	ReasonMalformedResponse = "malformed_response"
	// ReasonBytesAfterResponse: bytes past the end of a response (a body
	// on a 204, 304 or HEAD answer, more than its Content-Length).
	ReasonBytesAfterResponse = "bytes_after_response"
	// ReasonUnsolicited: bytes that arrived while the connection was idle.
	ReasonUnsolicited = "unsolicited_bytes"
)

type clientConn struct {
	c         net.Conn
	w         connWriter
	tls       bool
	notAfter  time.Time // the peer certificate's expiry (TLS); zero: none
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	requests  int
	idle      idlePeek
}

// connWriter counts what reached the connection and keeps its first
// error: a request of which nothing was written can be sent again on
// another connection, and a failure of the request's own body (not of the
// connection) is told apart.
type connWriter struct {
	c   net.Conn
	n   int64
	err error
}

func (w *connWriter) Write(p []byte) (int, error) {
	n, err := w.c.Write(p)
	w.n += int64(n)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

func (cc *clientConn) close() {
	cc.c.Close()
}

// errClosedIdle is a pooled connection the server had closed.
var errClosedIdle = errors.New("h1: server closed the idle connection before answering")

// errRequestBody: the request's own body failed while it was being sent
// (not the connection).
var errRequestBody = errors.New("h1: reading the request body")

// errNothingWritten: the request failed before any byte of it reached the
// connection.
var errNothingWritten = errors.New("h1: connection failed before the request was sent")

// streamedBody is the body size from which a request is written by a
// goroutine of its own while the response is awaited: a server may answer
// (403, 413) without reading a large body, and the answer must not wait
// for, or be lost to, a write the server will never read. Smaller bodies
// fit in the sockets' buffers and are written inline.
const streamedBody = 64 << 10

// writerGrace is how long an answer waits for the body's writer to finish
// before it counts as early.
const writerGrace = 2 * time.Millisecond

// RoundTrip sends req and returns its response, whose body the caller must
// close; the connection goes back to the pool when the body is read to the
// end. The request's context bounds the whole exchange, body included.
func (cl *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		cc, reused, err := cl.get(ctx, attempt == 0)
		if err != nil {
			return nil, err
		}
		resp, err := cl.exchange(ctx, cc, req)
		if err == nil {
			return resp, nil
		}
		// A kept connection that failed before the server could have
		// processed the request: once more on a new one, if that is safe.
		if reused && attempt == 0 && ctx.Err() == nil && retryable(req, err) {
			if cl.Retried != nil {
				reason := ReasonClosedIdle
				if errors.Is(err, errNothingWritten) {
					reason = ReasonNotSent
				}
				cl.Retried(reason)
			}
			continue
		}
		return nil, err
	}
}

// retryable decides, as net/http's Transport does (shouldRetryRequest),
// whether a request that failed on a reused connection may be sent again:
// whatever its method if nothing of it was written; if the server closed
// the connection before any byte of an answer, only an idempotent one
// (the server may have read it and failed while processing it). Either
// way its body must be had again.
func retryable(req *http.Request, err error) bool {
	switch {
	case errors.Is(err, errNothingWritten):
	case errors.Is(err, errClosedIdle):
		switch req.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		default:
			if req.Header.Get("Idempotency-Key") == "" && req.Header.Get("X-Idempotency-Key") == "" {
				return false
			}
		}
	default:
		return false
	}
	return rewind(req)
}

// rewind has a request's body ready to be sent again.
func rewind(req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	if req.GetBody == nil {
		return false
	}
	b, err := req.GetBody()
	if err != nil {
		return false
	}
	req.Body = b
	return true
}

func (cl *Client) exchange(ctx context.Context, cc *clientConn, req *http.Request) (*http.Response, error) {
	stop := func() bool { return true }
	d, hasDeadline := ctx.Deadline()
	if hasDeadline {
		cc.c.SetDeadline(d)
	}
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { cc.c.SetDeadline(time.Unix(1, 0)) })
	}
	fail := func(err error) (*http.Response, error) {
		stop()
		cc.close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("h1: %w", ctx.Err())
		}
		if hasDeadline && isTimeout(err) {
			// The connection's deadline is the context's and may fire first.
			return nil, fmt.Errorf("h1: %w", context.DeadlineExceeded)
		}
		if errors.Is(err, ErrFraming) && !errors.Is(err, errRequestBody) {
			cl.protocolError(ReasonMalformedResponse)
		}
		return nil, err
	}
	cc.requests++
	cc.w.n, cc.w.err = 0, nil
	var written chan error // the body's writer, when it runs on its own
	if b := req.Body; b != nil && b != http.NoBody && (req.ContentLength < 0 || req.ContentLength > streamedBody) {
		written = make(chan error, 1)
		go func() { written <- cc.send(req) }()
	} else if err := cc.send(req); err != nil {
		return fail(err)
	}
	if _, err := cc.br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: %w", errClosedIdle, err)
		}
		if written != nil {
			cc.close()
			select {
			case werr := <-written:
				// The writer's error, if any, says more.
				if werr != nil {
					return fail(werr)
				}
			default:
				// Still writing, maybe waiting for the caller's body: it
				// ends on the closed connection; the read error stands.
				return fail(err)
			}
		}
		return fail(cc.sendError(err))
	}
	var resp *http.Response
	var slot *body // room for b in resp's allocation, if any
	for resp == nil {
		r, rs, err := readResponse(cc.br, req)
		if err == nil {
			err = beginChunks(cc.br, r.Body)
		}
		if err == nil && r.StatusCode == http.StatusSwitchingProtocols && req.Header.Get("Upgrade") == "" {
			// What follows is in no protocol the request asked for (RFC
			// 9110 §15.2.2), yet would be read as the next answer.
			err = framingError("101 Switching Protocols to a request without Upgrade")
		}
		if err != nil {
			return fail(err) // a writer still running ends on the closed connection
		}
		// Informational answers (100 Continue, 103) are not passed on.
		if r.StatusCode >= 200 || r.StatusCode == http.StatusSwitchingProtocols {
			resp, slot = r, rs
		}
	}
	keep := !resp.Close && !req.Close && (cl.MaxRequestsPerConn <= 0 || cc.requests < cl.MaxRequestsPerConn)
	if written != nil {
		// The writer may just be finishing (the answer came as the body's
		// end went out): a moment decides, so such connections are kept.
		t := time.NewTimer(writerGrace)
		select {
		case werr := <-written:
			keep = keep && werr == nil
		case <-t.C:
			// An answer before the whole body was sent (RFC 9112 §9.5
			// lets a server do so): stop sending it, and as the server's
			// idea of where this request ends is now unknown, never
			// reuse the connection.
			cc.c.SetWriteDeadline(time.Unix(1, 0))
			keep = false
		}
		t.Stop()
	}
	if slot == nil {
		slot = new(body)
	}
	b := slot
	*b = body{cl: cl, cc: cc, rc: resp.Body, stop: stop, keep: keep, deadline: hasDeadline}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// beginChunks checks the first chunk line of a chunked response if it has
// already arrived, so a response malformed from its start fails before its
// head is passed on. One still on its way is not awaited: a streaming
// response's head must not wait for its first event.
func beginChunks(br *bufio.Reader, body io.ReadCloser) error {
	cb, ok := body.(*chunkedBody)
	if !ok {
		return nil
	}
	if buf, _ := br.Peek(br.Buffered()); bytes.IndexByte(buf, '\n') < 0 {
		return nil
	}
	if err := cb.begin(); err != nil {
		return err
	}
	return cb.check()
}

// send writes req on the connection. If the request's own body failed
// (the connection did not), what was sent is a truncated request: the
// connection is closed so the server sees it end unfinished, never as a
// complete request.
func (cc *clientConn) send(req *http.Request) error {
	err := writeRequest(cc.bw, req)
	if err == nil {
		err = cc.bw.Flush()
	}
	if err != nil && cc.w.err == nil {
		cc.c.Close()
		return fmt.Errorf("%w: %w", errRequestBody, err)
	}
	return cc.sendError(err)
}

// sendError classes a failure of the request's write on a connection the
// peer reset or closed: before any byte reached it (errNothingWritten), or
// after (errClosedIdle, as a close before the answer).
func (cc *clientConn) sendError(err error) error {
	switch {
	case err == nil || cc.w.err == nil || !isReset(cc.w.err):
		return err
	case cc.w.n == 0:
		return fmt.Errorf("%w: %w", errNothingWritten, err)
	}
	return fmt.Errorf("%w: %w", errClosedIdle, err)
}

// isReset is a connection the peer reset or closed under us (not a
// deadline of ours).
func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// body hands the connection back once the response is read to its end.
type body struct {
	cl   *Client
	cc   *clientConn
	rc   io.ReadCloser
	stop func() bool
	keep bool
	done bool
	// deadline: the exchange set the context's deadline on the
	// connection, to clear before it goes back to the pool. Without one
	// nothing was set (the context's AfterFunc did not fire when stop
	// reports true), so there is nothing to clear: a timer operation
	// less per request.
	deadline bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		if errors.Is(err, ErrFraming) {
			b.cl.protocolError(ReasonMalformedResponse)
		}
		b.finish(false)
	}
	return n, err
}

func (b *body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *body) finish(eof bool) {
	b.done = true
	// stop reports false if the context already fired: the deadline then
	// poisons the connection.
	if b.stop() && eof && b.keep {
		if b.cc.br.Buffered() > 0 {
			// More than the response: whatever it is, it must not be read
			// as the answer to the next request (maybe another caller's).
			b.cl.protocolError(ReasonBytesAfterResponse)
			b.cc.close()
			return
		}
		if b.deadline {
			b.cc.c.SetDeadline(time.Time{})
		}
		b.cl.put(b.cc)
		return
	}
	b.cc.close()
}

func (cl *Client) protocolError(reason string) {
	if cl.ProtocolError != nil {
		cl.ProtocolError(reason)
	}
}

func (cl *Client) limits() (int, time.Duration) {
	maxIdle, idle := cl.MaxIdle, cl.IdleTimeout
	if maxIdle <= 0 {
		maxIdle = 64
	}
	if idle <= 0 {
		idle = 90 * time.Second
	}
	return maxIdle, idle
}

// expiryMargin: a kept connection is retired this long before its
// certificates expire, so the peer never sees a request on it after.
const expiryMargin = time.Second

// get takes the most recently used idle connection (if pooled), or dials.
func (cl *Client) get(ctx context.Context, pooled bool) (*clientConn, bool, error) {
	_, idleTimeout := cl.limits()
	now := time.Now()
	cl.mu.Lock()
	for pooled && len(cl.idle) > 0 {
		cc := cl.idle[len(cl.idle)-1]
		cl.idle = cl.idle[:len(cl.idle)-1]
		// A connection is not used past its peer certificate's expiry.
		if now.Sub(cc.idleSince) >= idleTimeout || !cc.notAfter.IsZero() && !now.Add(expiryMargin).Before(cc.notAfter) {
			cc.close()
			continue
		}
		cl.mu.Unlock()
		// Nor once the peer sent anything while it was idle: a close (a
		// keep-alive timeout, a restart) or bytes no request asked for.
		switch cc.idle.check() {
		case idleData:
			if !cc.tls {
				// Over TLS it is close_notify: a close.
				cl.protocolError(ReasonUnsolicited)
			}
			cc.close()
		case idleClosed:
			cc.close()
		default:
			return cc, true, nil
		}
		cl.mu.Lock()
	}
	cl.mu.Unlock()
	c, err := cl.Dial(ctx)
	if err != nil {
		return nil, false, err
	}
	cc := &clientConn{c: c, notAfter: connNotAfter(c), br: bufio.NewReaderSize(c, bufSize), idle: newIdlePeek(c)}
	_, cc.tls = c.(interface{ ConnectionState() tls.ConnectionState })
	cc.w.c = c
	cc.bw = bufio.NewWriterSize(&cc.w, bufSize)
	return cc, false, nil
}

func (cl *Client) put(cc *clientConn) {
	maxIdle, idleTimeout := cl.limits()
	now := time.Now()
	cc.idleSince = now
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.closed || len(cl.idle) >= maxIdle {
		cc.close()
		return
	}
	// The oldest are first: drop the ones past their time.
	n := 0
	for n < len(cl.idle) && now.Sub(cl.idle[n].idleSince) >= idleTimeout {
		cl.idle[n].close()
		n++
	}
	cl.idle = append(cl.idle[n:], cc)
}

// CloseIdle closes the idle connections; with stop, the client keeps none
// from now on (the destination went away).
func (cl *Client) CloseIdle(stop bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, cc := range cl.idle {
		cc.close()
	}
	cl.idle = nil
	if stop {
		cl.closed = true
	}
}

// NotAfterConn is a connection with a bound of its own on when it may
// carry requests, such as the expiry of the certificate this side
// presented. The client stops using a connection at the earlier of that
// and the peer certificate's expiry.
type NotAfterConn interface {
	net.Conn
	NotAfter() time.Time
}

func connNotAfter(c net.Conn) time.Time {
	t := peerNotAfter(c)
	if e, ok := c.(NotAfterConn); ok {
		if own := e.NotAfter(); !own.IsZero() && (t.IsZero() || own.Before(t)) {
			t = own
		}
	}
	return t
}

// peerNotAfter is when a TLS connection's peer certificate expires (zero
// if the connection has none).
func peerNotAfter(c net.Conn) time.Time {
	tc, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return time.Time{}
	}
	if cs := tc.ConnectionState(); len(cs.PeerCertificates) > 0 {
		return cs.PeerCertificates[0].NotAfter
	}
	return time.Time{}
}

// idleState is what an idle connection's peer did while it was idle.
type idleState uint8

const (
	idleUnknown idleState = iota // no way to tell: use it
	idleQuiet                    // nothing: use it
	idleData                     // sent bytes
	idleClosed                   // closed or reset it
)
