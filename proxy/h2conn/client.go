package h2conn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Dialer opens a connection to the client's peer, ready for HTTP/2: TLS
// handshaken with ALPN "h2" (or plain TCP for h2c with prior knowledge).
type Dialer interface {
	DialContext(ctx context.Context) (net.Conn, error)
}

// Client sends requests to one peer as streams of as few connections as
// the peer's SETTINGS_MAX_CONCURRENT_STREAMS allows: a second connection
// is dialled only when every open one is full or going away.
type Client struct {
	Dialer Dialer
	Limits Limits
	// IdleTimeout closes a connection without an open stream for this
	// long; 0 keeps it.
	IdleTimeout time.Duration
	// PingInterval and PingTimeout: a connection that read nothing for
	// PingInterval is sent a PING, and closed when nothing arrives within
	// PingTimeout more (net/http's SendPingTimeout and PingTimeout);
	// PingInterval 0 sends none.
	PingInterval, PingTimeout time.Duration
	// OnRetry, if set, is told of each request sent again because the
	// peer never processed it (err satisfies IsUnprocessed), before it
	// goes; a metric counts them.
	OnRetry func(err error)

	// now reads the clock (nil: time.Now); tests set it.
	now func() time.Time

	mu      sync.Mutex
	conns   []*clientConn
	dialing chan struct{} // closed when the dial in progress ends
	closed  bool
}

// clientConn is one connection of a Client.
type clientConn struct {
	*conn
	nextID uint32 // guarded by conn.mu
	// notAfter is when the connection stops taking streams: the earlier
	// of its peer certificate's expiry and the dialled connection's own
	// NotAfter (NotAfterConn); zero: never.
	notAfter time.Time
}

// NotAfterConn is a connection a Dialer returns that may carry new
// streams only until NotAfter, such as the expiry of the certificate this
// side presented. The Client opens no stream on a connection within
// expiryMargin of the earlier of that and the peer certificate's expiry:
// the connection drains and closes, and new streams go on a new one, so
// no request travels on a connection authenticated by an expired
// certificate (TLS checks expiry only at the handshake).
type NotAfterConn interface {
	net.Conn
	NotAfter() time.Time
}

// expiryMargin is how long before its certificates expire a connection
// stops taking streams.
const expiryMargin = time.Second

// connNotAfter is when nc stops taking streams (zero: never).
func connNotAfter(nc net.Conn) time.Time {
	var t time.Time
	if tc, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		if cs := tc.ConnectionState(); len(cs.PeerCertificates) > 0 {
			t = cs.PeerCertificates[0].NotAfter
		}
	}
	if e, ok := nc.(NotAfterConn); ok {
		if own := e.NotAfter(); !own.IsZero() && (t.IsZero() || own.Before(t)) {
			t = own
		}
	}
	return t
}

// errRequestBody: the request's own body failed while it was sent.
var errRequestBody = errors.New("h2conn: reading the request body")

// errBodyClosed resets a stream whose response body was closed unread.
var errBodyClosed = errors.New("h2conn: response body closed")

// continueTimeout is how long a request with Expect: 100-continue waits
// for the peer's 100 before sending its body anyway (net/http's default).
const continueTimeout = time.Second

// maxUnprocessedRetries is how many times RoundTrip sends again a request
// the peer never processed (IsUnprocessed) before giving up: enough to
// ride out a connection closing under it and the one dialled after it,
// few enough that a peer refusing everything costs a bounded amount.
const maxUnprocessedRetries = 2

// RoundTrip sends req on a stream and returns its response, whose body
// the caller must close. The request's context bounds the whole exchange,
// body included. A request the peer never processed (IsUnprocessed: its
// stream refused, after the peer's GOAWAY, or its connection gone before
// its HEADERS left) is sent again on another connection, at most
// maxUnprocessedRetries times and only when its body can be had again
// (none, or GetBody); OnRetry is told of each.
func (cl *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := cl.roundTrip(req)
		if err == nil || !IsUnprocessed(err) || attempt == maxUnprocessedRetries || req.Context().Err() != nil {
			return resp, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
		if cl.OnRetry != nil {
			cl.OnRetry(err)
		}
	}
}

// roundTrip is one attempt of RoundTrip.
func (cl *Client) roundTrip(req *http.Request) (*http.Response, error) {
	cc, s, err := cl.open(req)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	return cc.await(s, req)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// Retire opens no more streams on the connections open now and closes
// each when its last stream ends (GOAWAY's drain, from this side); new
// requests dial new connections.
func (cl *Client) Retire() {
	cl.mu.Lock()
	conns := cl.conns
	cl.conns = nil
	cl.mu.Unlock()
	for _, cc := range conns {
		cc.mu.Lock()
		cc.goingAway = true
		idle := cc.inUse == 0
		cc.mu.Unlock()
		if idle {
			cc.close(errIdle)
		}
	}
}

// Close closes every connection; streams on them fail.
func (cl *Client) Close() {
	cl.mu.Lock()
	cl.closed = true
	conns := cl.conns
	cl.conns = nil
	cl.mu.Unlock()
	for _, cc := range conns {
		cc.close(errors.New("h2conn: client closed"))
	}
}

// open starts req's stream (its HEADERS queued) on a connection with
// room, dialling one when none has.
func (cl *Client) open(req *http.Request) (*clientConn, *stream, error) {
	ctx := req.Context()
	fields, err := requestFields(req)
	if err != nil {
		return nil, nil, err
	}
	noBody := req.Body == nil || req.Body == http.NoBody
	var fresh *clientConn // dialled for this request: taken even near its expiry
	for {
		cl.mu.Lock()
		if cl.closed {
			cl.mu.Unlock()
			return nil, nil, errors.New("h2conn: client closed")
		}
		live := cl.conns[:0]
		var cc *clientConn
		var s *stream
		for _, c := range cl.conns {
			if c.dead() {
				continue
			}
			live = append(live, c)
			if s == nil {
				if s = c.tryOpen(req, fields, noBody, c == fresh); s != nil {
					cc = c
				}
			}
		}
		clear(cl.conns[len(live):])
		cl.conns = live
		if s != nil {
			cl.mu.Unlock()
			return cc, s, nil
		}
		if ch := cl.dialing; ch != nil {
			cl.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
		ch := make(chan struct{})
		cl.dialing = ch
		cl.mu.Unlock()
		cc, err := cl.dial(ctx)
		cl.mu.Lock()
		cl.dialing = nil
		close(ch)
		if err == nil {
			cl.conns = append(cl.conns, cc)
			fresh = cc
		}
		cl.mu.Unlock()
		if err != nil {
			return nil, nil, err
		}
	}
}

// dial opens a connection and sends the preface and SETTINGS.
func (cl *Client) dial(ctx context.Context) (*clientConn, error) {
	nc, err := cl.Dialer.DialContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("h2conn: dialing: %w", err)
	}
	cc := &clientConn{nextID: 1, notAfter: connNotAfter(nc)}
	cc.conn = newConn(nc, cl.Limits, cc)
	if cl.now != nil {
		cc.conn.now = cl.now
	}
	cc.idleTimeout = cl.IdleTimeout
	if _, err := cc.w.bw.WriteString(http2.ClientPreface); err != nil {
		nc.Close()
		return nil, err
	}
	cc.w.enqueue(cc.settings(false)...)
	cc.start()
	go cc.readLoop()
	// Streams wait for the server's SETTINGS, so that its limit on
	// concurrent streams is known before any is opened.
	select {
	case <-cc.settingsc:
		cc.mu.Lock()
		cc.streamsNow()
		cc.mu.Unlock()
		if cl.PingInterval > 0 {
			cc.keepalive(cl.PingInterval, cl.PingTimeout)
		}
		return cc, nil
	case <-cc.done:
		return nil, fmt.Errorf("h2conn: connection closed before the server's SETTINGS: %w: %w", ErrNotSent, cc.err)
	case <-ctx.Done():
		cc.close(ctx.Err())
		return nil, ctx.Err()
	}
}

// dead: the connection ended, or is going away with no stream left
// (then it is closed here).
func (cc *clientConn) dead() bool {
	cc.mu.Lock()
	dead, idle := cc.err != nil, cc.goingAway && cc.inUse == 0
	cc.mu.Unlock()
	if idle && !dead {
		cc.close(errors.New("h2conn: connection went away"))
	}
	return dead || idle
}

// tryOpen starts a stream if the connection has room. A connection near
// its certificates' expiry takes none unless fresh (dialled for this
// request: the peer has no newer certificate yet, and dialling again
// would not get one).
func (cc *clientConn) tryOpen(req *http.Request, fields []hpack.HeaderField, end, fresh bool) *stream {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err != nil || cc.goingAway || cc.inUse >= cc.peerMax || cc.nextID > 1<<31-1 {
		return nil
	}
	if !fresh && !cc.notAfter.IsZero() && !cc.now().Add(expiryMargin).Before(cc.notAfter) {
		// Its certificates are about to expire: it drains (dead closes it
		// once its last stream ends) and the request goes on a new one.
		cc.goingAway = true
		return nil
	}
	s := cc.newStream(cc.nextID)
	cc.nextID += 2
	s.req = req
	if !end && strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		s.cont = make(chan struct{})
	}
	s.localEnd = end
	if cc.w.enqueue(frame{kind: kHeaders, stream: s.id, fields: fields, end: end, opens: s}) != nil {
		return nil
	}
	cc.streams[s.id] = s
	cc.inUse++
	cc.streamsNow()
	return s
}

// await sends req's body, if any, and waits for the response head.
func (cc *clientConn) await(s *stream, req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	stop := noStop
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { cc.cancel(s, ctx.Err()) })
	}
	if !s.localEnd {
		if s.cont == nil && (req.ContentLength > 0 && req.ContentLength <= dataChunk || arrivedWhole(req.Body)) {
			// A small body of known length, or one already received
			// whole by a stream of ours (a gRPC call's message, relayed
			// with no Content-Length), is sent by the caller's goroutine
			// before it waits, as an HTTP/1.1 client would: its sender
			// has it whole and waits for no answer first, so a goroutine
			// per call would only add a hand-off.
			cc.sendBody(s, req)
		} else {
			go cc.sendBody(s, req)
		}
	}
	cc.mu.Lock()
	for s.resp == nil && !s.failed {
		s.wait(&s.recvc)
		cc.mu.Lock()
	}
	resp, err := s.resp, s.sendErr
	s.resp = nil
	cc.mu.Unlock()
	if resp != nil {
		return cc.withBody(s, resp, stop), nil
	}
	stop()
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return nil, err
}

// arrivedWhole reports whether body is a request body an h2conn server
// stream has received to its END_STREAM, of at most dataChunk bytes:
// reading it never waits, and sending it fits the windows a stream
// opens with.
func arrivedWhole(body io.Reader) bool {
	rb, ok := body.(*requestBody)
	if !ok {
		return false
	}
	s := (*stream)(rb)
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.remoteEnd && !s.expect && s.rbuf.len() <= dataChunk
}

// noStop is the stop of a request whose context is never done.
func noStop() bool { return false }

func (cc *clientConn) withBody(s *stream, resp *http.Response, stop func() bool) *http.Response {
	s.stop = stop
	resp.Body = (*responseBody)(s)
	return resp
}

// cancel resets s with CANCEL: its reads and writes fail with err.
func (c *conn) cancel(s *stream, err error) {
	c.w.enqueue(frame{kind: kRST, stream: s.id, code: http2.ErrCodeCancel})
	c.endStream(s, err)
}

// sendBody copies the request body into DATA frames, then trailers.
func (cc *clientConn) sendBody(s *stream, req *http.Request) {
	defer req.Body.Close()
	if s.cont != nil {
		t := time.NewTimer(continueTimeout)
		select {
		case <-s.cont: // closed on fail too
		case <-t.C:
		}
		t.Stop()
	}
	bp := dataPool.Get().(*[dataChunk]byte)
	defer dataPool.Put(bp)
	buf := bp[:]
	for {
		n, rerr := req.Body.Read(buf)
		if n > 0 {
			if err := s.send(nil, buf[:n], nil, false); err != nil {
				return
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			cc.cancel(s, fmt.Errorf("%w: %w", errRequestBody, rerr))
			return
		}
	}
	var tail *frame
	if len(req.Trailer) > 0 {
		tail = &frame{kind: kHeaders, stream: s.id, fields: headerFields(nil, req.Trailer)}
	}
	s.send(nil, nil, tail, true)
}

// headers takes a response head, an informational head or trailers.
func (cc *clientConn) headers(f *http2.MetaHeadersFrame) error {
	cc.mu.Lock()
	s := cc.streams[f.StreamID]
	cc.mu.Unlock()
	if s == nil {
		return nil // a stream this side reset
	}
	if s.gotHead {
		if !f.StreamEnded() {
			cc.resetStream(s.id, http2.ErrCodeProtocol)
			return nil
		}
		s.trailers(f)
		return nil
	}
	code, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || code < 100 || code > 999 {
		cc.resetStream(s.id, http2.ErrCodeProtocol)
		return nil
	}
	if code < 200 {
		if f.StreamEnded() {
			cc.resetStream(s.id, http2.ErrCodeProtocol)
		} else if code == http.StatusContinue {
			s.continued()
		}
		return nil
	}
	s.gotHead = true
	s.continued()
	resp := &http.Response{Status: statusLine(code), StatusCode: code,
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: headerMap(f.RegularFields()), ContentLength: -1,
		Request: s.req}
	if cl := resp.Header["Content-Length"]; len(cl) > 0 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			resp.ContentLength = n
		}
	}
	resp.Trailer = declaredTrailers(resp.Header)
	if f.StreamEnded() && resp.ContentLength < 0 && s.req.Method != http.MethodHead {
		resp.ContentLength = 0
	}
	cc.mu.Lock()
	// Trailers go into the response's map, made when the first arrive if
	// none was declared (as Go's HTTP/2 transport does).
	s.resp, s.trailerTo = resp, &resp.Trailer
	s.wakeRecv()
	cc.mu.Unlock()
	if f.StreamEnded() {
		s.endRemote()
	}
	return nil
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// peerGoAway fails, as refused, the streams the server will not process,
// and opens no more streams on the connection.
func (cc *clientConn) peerGoAway(f *http2.GoAwayFrame) {
	cc.mu.Lock()
	cc.goingAway = true
	var refused []*stream
	for id, s := range cc.streams {
		if id > f.LastStreamID {
			refused = append(refused, s)
		}
	}
	cc.mu.Unlock()
	for _, s := range refused {
		cc.endStream(s, ErrRefused)
	}
}

// forgot frees a stream's slot.
func (cc *clientConn) forgot(*stream) {
	cc.mu.Lock()
	cc.inUse--
	cc.streamsNow()
	drained := cc.goingAway && cc.inUse == 0 && cc.err == nil
	cc.mu.Unlock()
	if drained {
		cc.close(errIdle)
	}
}

// responseBody is a response's body (its stream, so that it costs no
// allocation of its own); closing it before its end resets the stream.
type responseBody stream

func (b *responseBody) Read(p []byte) (int, error) {
	s := (*stream)(b)
	n, err := s.read(p)
	if err != nil {
		s.bodyEOF = err == io.EOF
		s.stop()
	}
	return n, err
}

func (b *responseBody) Close() error {
	s := (*stream)(b)
	s.stop()
	if !s.bodyEOF {
		s.c.cancel(s, errBodyClosed)
	}
	return nil
}

// requestFields are req's pseudo-header and header fields.
func requestFields(req *http.Request) ([]hpack.HeaderField, error) {
	host := req.Host
	if host == "" && req.URL != nil {
		host = req.URL.Host
	}
	if req.URL == nil {
		return nil, errors.New("h2conn: request without a URL")
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	var pseudo []hpack.HeaderField
	if method == http.MethodConnect {
		pseudo = []hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":authority", Value: host}}
	} else {
		scheme := req.URL.Scheme
		if scheme == "" {
			scheme = "https"
		}
		pseudo = make([]hpack.HeaderField, 4, 4+len(req.Header)+2)
		pseudo[0] = hpack.HeaderField{Name: ":method", Value: method}
		pseudo[1] = hpack.HeaderField{Name: ":scheme", Value: scheme}
		pseudo[2] = hpack.HeaderField{Name: ":authority", Value: host}
		pseudo[3] = hpack.HeaderField{Name: ":path", Value: req.URL.RequestURI()}
	}
	fs := headerFields(pseudo, req.Header)
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			keys = append(keys, k)
		}
		fs = append(fs, hpack.HeaderField{Name: "trailer", Value: strings.Join(keys, ",")})
	}
	if req.ContentLength > 0 && req.Header.Get("Content-Length") == "" {
		fs = append(fs, hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(req.ContentLength, 10)})
	}
	return fs, nil
}
