package h1

import (
	"bufio"
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

	mu     sync.Mutex
	idle   []*clientConn // most recently used last
	closed bool
}

type clientConn struct {
	c         net.Conn
	notAfter  time.Time // the peer certificate's expiry (TLS); zero: none
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	requests  int
}

func (cc *clientConn) close() {
	cc.c.Close()
}

// errClosedIdle is a pooled connection the server had closed.
var errClosedIdle = errors.New("h1: server closed the idle connection before answering")

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
		// A kept connection the server closed while it was idle: once more
		// on a new one, if sending the request again is safe.
		if reused && attempt == 0 && errors.Is(err, errClosedIdle) && ctx.Err() == nil && rewind(req) {
			continue
		}
		return nil, err
	}
}

// replayable requests may be sent again after a stale connection failed:
// idempotent ones whose body can be had again (as net/http decides).
func rewind(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
	default:
		if req.Header.Get("Idempotency-Key") == "" && req.Header.Get("X-Idempotency-Key") == "" {
			return false
		}
	}
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
		return nil, err
	}
	cc.requests++
	// A kept connection the server has already closed fails the write
	// (EPIPE, reset) before anything reached it.
	stale := func(err error) error {
		if isReset(err) {
			return fmt.Errorf("%w: %w", errClosedIdle, err)
		}
		return err
	}
	if err := writeRequest(cc.bw, req); err != nil {
		return fail(stale(err))
	}
	if err := cc.bw.Flush(); err != nil {
		return fail(stale(err))
	}
	if _, err := cc.br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: %w", errClosedIdle, err)
		}
		return fail(stale(err))
	}
	var resp *http.Response
	for {
		r, err := readResponse(cc.br, req)
		if err != nil {
			return fail(err)
		}
		// Informational answers (100 Continue, 103) are not passed on.
		if r.StatusCode >= 200 || r.StatusCode == http.StatusSwitchingProtocols {
			resp = r
			break
		}
	}
	keep := !resp.Close && !req.Close && (cl.MaxRequestsPerConn <= 0 || cc.requests < cl.MaxRequestsPerConn)
	b := &body{cl: cl, cc: cc, rc: resp.Body, stop: stop, keep: keep}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
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
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
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
		b.cc.c.SetDeadline(time.Time{})
		b.cl.put(b.cc)
		return
	}
	b.cc.close()
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
		if now.Sub(cc.idleSince) < idleTimeout && (cc.notAfter.IsZero() || now.Add(expiryMargin).Before(cc.notAfter)) {
			cl.mu.Unlock()
			return cc, true, nil
		}
		cc.close()
	}
	cl.mu.Unlock()
	c, err := cl.Dial(ctx)
	if err != nil {
		return nil, false, err
	}
	return &clientConn{c: c, notAfter: connNotAfter(c), br: bufio.NewReaderSize(c, bufSize), bw: bufio.NewWriterSize(c, bufSize)}, false, nil
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
