package h2conn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Server serves HTTP/2 on connections handed to it by Serve, one handler
// call per stream.
type Server struct {
	Handler http.Handler
	Limits  Limits
	// IdleTimeout closes, with GOAWAY, a connection without a running
	// handler for this long; 0 keeps it.
	IdleTimeout time.Duration
	// OnAbuse, if set, is told of every connection closed with GOAWAY
	// ENHANCE_YOUR_CALM: the peer's address, and ReasonRapidReset or
	// ReasonControlFlood.
	OnAbuse func(peer net.Addr, reason string)
	// AbuseDrain, when positive, lets the streams a connection closed
	// for abuse already carries run for up to this long after its GOAWAY
	// ENHANCE_YOUR_CALM (which names the last one taken, so the peer
	// sends later ones again on a new connection), as a graceful
	// shutdown does: a connection from a proxy that carries many
	// clients' requests then loses only the abuser's. 0 closes it at once.
	AbuseDrain time.Duration
	// Log gets handler panics (other than http.ErrAbortHandler); nil
	// discards.
	Log *slog.Logger

	// now reads the clock (nil: time.Now); tests set it.
	now func() time.Time

	mu       sync.Mutex
	conns    map[*serverConn]struct{}
	shutdown bool
	work     chan streamJob // to handler goroutines waiting for a stream; made by the first Serve
}

// prefaceTimeout bounds the wait for a client's connection preface.
const prefaceTimeout = 10 * time.Second

// serverConn is one connection being served.
type serverConn struct {
	*conn
	srv        *Server
	ctx        context.Context
	tls        *tls.ConnectionState
	remoteAddr string // the client's address, each request's RemoteAddr
	// notAfter is when the client's certificate expires (zero: none):
	// no stream opens from then on.
	notAfter time.Time
}

// serverStream is a stream served and its response, allocated together.
type serverStream struct {
	stream
	rw responseWriter
}

// Serve serves streams on nc, whose TLS (if any) has negotiated "h2",
// until the connection ends. ctx is the parent of every request's
// context. Serve closes nc.
func (s *Server) Serve(ctx context.Context, nc net.Conn) error {
	sc := &serverConn{srv: s, ctx: ctx, remoteAddr: nc.RemoteAddr().String()}
	sc.conn = newConn(nc, s.Limits, sc)
	sc.onAbuse, sc.idleTimeout, sc.server, sc.abuseDrain = s.OnAbuse, s.IdleTimeout, true, s.AbuseDrain
	if s.now != nil {
		sc.conn.now = s.now
	}
	nc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	if tc, ok := nc.(*tls.Conn); ok {
		// The handshake first (a listener's connection has not done it
		// yet): each request's TLS state, and the client's expiry, are
		// its outcome.
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return fmt.Errorf("h2conn: TLS handshake: %w", err)
		}
		cs := tc.ConnectionState()
		sc.tls = &cs
		if len(cs.PeerCertificates) > 0 {
			sc.notAfter = cs.PeerCertificates[0].NotAfter
		}
	}
	var pre [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(sc.br, pre[:]); err != nil || string(pre[:]) != http2.ClientPreface {
		nc.Close()
		if err == nil {
			err = errors.New("h2conn: client preface was not HTTP/2's")
		}
		return fmt.Errorf("h2conn: reading the client preface: %w", err)
	}
	nc.SetReadDeadline(time.Time{})
	if !s.track(sc, true) {
		nc.Close()
		return errors.New("h2conn: server shut down")
	}
	defer s.track(sc, false)
	sc.w.enqueue(sc.settings(true)...)
	sc.start()
	sc.mu.Lock()
	sc.streamsNow()
	sc.mu.Unlock()
	err := sc.readLoop()
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (s *Server) track(sc *serverConn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, sc)
		return true
	}
	if s.shutdown {
		return false
	}
	if s.conns == nil {
		s.conns = map[*serverConn]struct{}{}
		s.work = make(chan streamJob)
	}
	s.conns[sc] = struct{}{}
	return true
}

// Shutdown sends GOAWAY on every connection, lets the streams already
// open finish, and closes each connection when its last handler returns;
// when ctx ends first, the rest are closed. New connections are refused.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		sc.goAway()
	}
	for _, sc := range conns {
		select {
		case <-sc.done:
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		}
	}
	return nil
}

// Close closes every connection at once.
func (s *Server) Close() {
	s.mu.Lock()
	s.shutdown = true
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		sc.close(errors.New("h2conn: server closed"))
	}
}

// goAway starts a graceful close: GOAWAY NO_ERROR naming the last stream
// the client opened, then the close when no handler runs.
func (sc *serverConn) goAway() {
	sc.mu.Lock()
	sc.goingAway = true
	last, idle := sc.lastRemote, sc.inUse == 0
	sc.mu.Unlock()
	sc.w.enqueue(frame{kind: kGoAway, n: last, code: http2.ErrCodeNo})
	if idle {
		sc.w.flushed(time.Second)
		sc.close(errors.New("h2conn: server shut down"))
	}
}

// headers opens a stream for a request, or takes a request's trailers.
func (sc *serverConn) headers(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	sc.mu.Lock()
	if s := sc.streams[id]; s != nil {
		sc.mu.Unlock()
		if !f.StreamEnded() {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		s.trailers(f)
		return nil
	}
	if id%2 == 0 {
		sc.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if id <= sc.lastRemote {
		// A stream this side already ended: what the client still sends
		// on it is ignored (RFC 9113, section 5.1).
		sc.mu.Unlock()
		return nil
	}
	sc.lastRemote = id
	// As proxy/h1's server: no request past the client's certificate's
	// expiry. REFUSED_STREAM tells the client it was not processed and
	// may go again on a new connection, made with its renewed
	// certificate (RFC 9113 §8.7); GOAWAY ends this one.
	expired := !sc.notAfter.IsZero() && !sc.now().Before(sc.notAfter)
	if sc.goingAway || sc.inUse >= sc.lim.MaxStreams || expired {
		goAway := expired && !sc.goingAway
		sc.mu.Unlock()
		sc.w.enqueue(frame{kind: kRST, stream: id, code: http2.ErrCodeRefusedStream})
		if goAway {
			sc.goAway()
		}
		return nil
	}
	ss := new(serverStream)
	sc.initStream(&ss.stream, id)
	s := &ss.stream
	sc.streams[id] = s
	sc.inUse++
	sc.streamsNow()
	if f.StreamEnded() {
		s.remoteEnd, s.rerr = true, io.EOF
	}
	sc.mu.Unlock()
	rw := &ss.rw
	rw.s, rw.h = s, http.Header{}
	if f.Truncated {
		rw.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
		go sc.finish(s, rw, false)
		return nil
	}
	req, err := sc.request(s, f)
	if err != nil {
		sc.resetStream(id, http2.ErrCodeProtocol)
		sc.handlerDone(s)
		return nil
	}
	rw.req = req
	sc.srv.dispatch(streamJob{sc, s, rw, req})
	return nil
}

// streamJob is a stream whose handler is to run.
type streamJob struct {
	sc  *serverConn
	s   *stream
	rw  *responseWriter
	req *http.Request
}

// workerIdle is how long a handler goroutine waits for another stream
// before it exits.
const workerIdle = time.Second

// dispatch runs a stream's handler on a goroutine that served one before
// and waits for another, or else on a new one. A goroutine per stream
// grows its stack anew for every request (a tenth of the server's CPU
// at 64 concurrent small requests, in runtime.newstack); one that served
// a stream keeps its stack for the next, as grpc-go's stream workers do.
func (s *Server) dispatch(j streamJob) {
	select {
	case s.work <- j:
	default:
		go s.worker(j)
	}
}

// worker serves j, then the streams dispatch hands it, until none comes
// for workerIdle.
func (s *Server) worker(j streamJob) {
	var idle *time.Timer
	for {
		j.sc.serve(j.s, j.rw, j.req)
		j = streamJob{}
		if idle == nil {
			idle = time.NewTimer(workerIdle)
		} else {
			idle.Reset(workerIdle)
		}
		select {
		case j = <-s.work:
		case <-idle.C:
			return
		}
	}
}

// serve runs the handler for one stream.
func (sc *serverConn) serve(s *stream, rw *responseWriter, req *http.Request) {
	panicked := true
	defer func() {
		if panicked {
			if p := recover(); p != nil && p != http.ErrAbortHandler && sc.srv.Log != nil {
				sc.srv.Log.Error("h2conn: handler panicked", "error", fmt.Sprint(p), "path", req.URL.Path)
			}
		}
		sc.finish(s, rw, panicked)
	}()
	sc.srv.Handler.ServeHTTP(rw, req)
	panicked = false
}

// finish ends the response of a handler that returned (or panicked: the
// stream is reset) and frees the stream's slot.
func (sc *serverConn) finish(s *stream, rw *responseWriter, panicked bool) {
	defer sc.handlerDone(s)
	if rw.deadline != nil {
		rw.deadline.Stop()
	}
	if panicked {
		sc.resetStream(s.id, http2.ErrCodeInternal)
		return
	}
	if err := rw.finish(); err != nil {
		return
	}
	sc.mu.Lock()
	unread := !s.remoteEnd
	sc.mu.Unlock()
	if unread {
		// The answer is complete; the client need not send the rest of
		// its body (RFC 9113, section 8.1).
		sc.resetStream(s.id, http2.ErrCodeNo)
	}
}

func (sc *serverConn) handlerDone(s *stream) {
	if s.cancel != nil {
		s.cancel()
	}
	sc.forget(s)
	sc.mu.Lock()
	sc.inUse--
	sc.streamsNow()
	closing := sc.goingAway && sc.inUse == 0 && sc.err == nil
	sc.mu.Unlock()
	if closing {
		sc.w.flushed(time.Second)
		sc.close(errors.New("h2conn: server shut down"))
	}
}

// peerGoAway: a client going away opens no more streams; those open
// finish.
func (sc *serverConn) peerGoAway(*http2.GoAwayFrame) {}

func (sc *serverConn) forgot(*stream) {}
