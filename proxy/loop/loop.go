// Package loop relays HTTP/1.1 between callers and upstreams (Config.Dial's,
// or one a Handler names per request: Verdict.Upstream) on an event
// loop, an upstream connection serving one caller's exchange at a time
// and otherwise idle in the loop's pool. A Handler decides each request
// from its head: forwarded (its head rewritten, its upstream named, a
// timeout), answered, or handed back to goroutines; an Exchange that is
// a Retrier or a Resender sends its request elsewhere when its upstream
// cannot be reached, hangs up, or answers a status it names. After its
// handshake a connection's socket leaves Go's poller for an epoll set
// that one goroutine serves. For every ready
// socket it does one read(2) into the connection's buffer; crypto/tls
// decrypts from that buffer (a tls.Conn over a buffer-backed net.Conn
// that answers os.ErrDeadlineExceeded when it has no more bytes, which
// crypto/tls treats as retryable); every complete message head is parsed
// by proxy/h1 (ParseHead) and written on as bytes, hop-by-hop fields
// removed, and bodies pass through as they are framed (Content-Length or
// chunked); at the end of each batch of ready sockets it seals one TLS
// record and does one write(2) per connection with something to send.
// No goroutine runs per connection or per request, no read finds an
// empty socket, and no http.Request is built unless a Handler asks.
//
// The loop's epoll descriptor sits in Go's poller: when nothing is
// ready the loop's goroutine parks in the scheduler like any other, and
// its thread is free (a thread blocked in epoll_wait would hold Go's
// only P on a small machine: bench/README.md, "The transport on an event
// loop").
//
// What it does not carry it refuses with a status (ErrorAnswer of
// proxy/h1): HTTP/1.0 requests, Upgrade, CONNECT, transfer codings other
// than chunked, responses read until the connection closes. A sidecar
// keeps its goroutine path for those protocols (HTTP/2, gRPC, WebSocket,
// TCP), chosen by ALPN before a connection is handed over.
package loop

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// Config is what a Loop needs to know of its upstream and its callers.
type Config struct {
	// Dial connects to the upstream of every request whose Verdict names
	// no Upstream (their connections' key is ""). It is called on a
	// goroutine of its own when such a request finds no idle connection,
	// and bounded by DialTimeout. Nil: such a request gets BadGateway.
	Dial func(ctx context.Context) (net.Conn, error)
	// UpstreamTLS, if not nil, is the client side of a TLS handshake
	// done over each upstream connection before it is used.
	UpstreamTLS *tls.Config
	// Handler decides every request; nil forwards each as received,
	// hop-by-hop fields removed.
	Handler Handler
	// Handoff, if set, takes back a caller's connection whose next
	// request the loop does not carry (an Upgrade, CONNECT, HTTP/1.0:
	// ErrUnsupported of proxy/h1) instead of its answering 501: c is the
	// connection as a net.Conn (over TLS for a TLS caller), whose reads
	// return that request first; value is Take's. It is called on a
	// goroutine of its own, which it may keep for as long as it serves c;
	// it must close c. A request whose Verdict says Handoff goes the same
	// way. Only a request with no exchange before it in flight is handed
	// off (pipelined ones wait their turn).
	Handoff func(c net.Conn, value any)
	// HandoffWrap, if set, wraps the socket of a connection handed back,
	// under its TLS: what a listener puts around the connections it
	// accepts (a read idle timeout, say) and the goroutine path relies on.
	HandoffWrap func(net.Conn) net.Conn
	// DropRequestTrailers: the trailer fields of a chunked request are
	// checked, and forwarded only when the request's Verdict.Trailers
	// names them (the chunked body still ends with its trailer section,
	// empty or not). A Handler decides on the head alone: set it when
	// the upstream must get no field the Handler did not declare.
	DropRequestTrailers bool
	// HeaderTimeout bounds how long a caller may take to send a request
	// head it has begun (on a new connection, from its start); zero:
	// no bound. IdleTimeout bounds how long a kept-alive connection may
	// wait for its next request; zero: no bound. Neither applies while
	// an exchange is in flight, as in proxy/h1's server.
	HeaderTimeout, IdleTimeout time.Duration
	// ReadIdleTimeout closes a caller's connection that sends nothing
	// for this long, whatever it is doing (a body stalled mid-way, an
	// exchange waiting on it); zero: no bound.
	ReadIdleTimeout time.Duration
	// MinBodyRate is the rate, in bytes/s, below which a request body is
	// cut off (and its connection closed): after a grace period of
	// BodyRateWindow, every window of that length in which the loop
	// waited on the caller for body bytes must bring
	// MinBodyRate×BodyRateWindow bytes (Kestrel's
	// MinRequestBodyDataRate). Time the loop held the caller back
	// (its upstream not taking what it was sent) does not count. Zero:
	// no minimum.
	MinBodyRate    int64
	BodyRateWindow time.Duration
	// DialTimeout bounds Dial (or Upstream.Dial) and the upstream's TLS
	// handshake; zero: 5 s.
	DialTimeout time.Duration
	// ResendBodyLimit is the largest request body, in bytes, the loop
	// keeps a copy of so that a Resender's request can be sent again
	// (Envoy's per-request buffer limit); a larger one is sent once.
	// Zero: 1 MiB; negative: only requests without a body go again.
	ResendBodyLimit int64
	// MaxIdlePerUpstream bounds the idle upstream connections the loop
	// keeps per Upstream key (one pool for the whole loop, used last in,
	// first out); past it the longest idle is closed. Zero: 64;
	// negative: none is kept (every exchange dials).
	MaxIdlePerUpstream int
	// UpstreamIdleTimeout closes an idle upstream connection unused for
	// this long (checked by the loop's sweep, up to a second late);
	// zero: 90 s.
	UpstreamIdleTimeout time.Duration
	// BadGateway is the whole answer a caller gets when the upstream
	// cannot be reached, after which its connection closes; empty: a
	// plain 502.
	BadGateway []byte
	// ProtocolError, if set, is told of every upstream connection closed
	// because the upstream broke HTTP/1.1's framing, with the reason
	// (proxy/h1's ReasonMalformedResponse, ReasonBytesAfterResponse,
	// ReasonUnsolicited: bytes while no request was in flight, idle in
	// the pool or not), as proxy/h1.Client tells its own.
	ProtocolError func(reason string)
	// Log, if not nil, gets the loop's own failures (epoll, dial).
	Log *slog.Logger
	// Now is the loop's clock; nil: time.Now.
	Now func() time.Time
}

// Handler decides each request a Loop reads. Its methods run on the
// loop's goroutine, between reads: they must not block (no I/O, no lock
// held by anything that does).
type Handler interface {
	// Request is called with each request head, as ParseHead read it
	// (framing checked, the body not yet read). The Caller is the
	// connection it came on.
	Request(c *Caller, h *h1.Head) Verdict
}

// Verdict is what becomes of one request. The loop copies Head, Answer,
// TimeoutAnswer and Unreachable before Request returns to it: a Handler may build them in
// memory of its own that it reuses.
type Verdict struct {
	// Head, if not nil, is the request head sent upstream in place of
	// the one received: start line, fields, blank line. It must keep
	// the received head's framing (Content-Length or Transfer-Encoding:
	// chunked), since the body follows as received. Nil with a nil
	// Answer: the received head, hop-by-hop fields removed.
	Head []byte
	// Answer, if not nil, is the whole answer sent to the caller instead
	// of forwarding (status line, fields, blank line, body with its
	// framing); the request's body, if any, is read and dropped.
	Answer []byte
	// Close ends the caller's connection once this exchange is over.
	Close bool
	// Exchange, if not nil, is told when the exchange ends (not for a
	// request handed off).
	Exchange Exchange
	// Upstream, if not nil, is where this request goes; nil: Config.Dial
	// and Config.UpstreamTLS, whose key is "" (so an Upstream's Key must
	// not be "": the pool would mix their connections).
	Upstream Upstream
	// Handoff: the loop does not carry this request; the caller's
	// connection goes to Config.Handoff, its reads returning this
	// request first (its head as received, then whatever of its body and
	// of later requests the loop had read). With Config.Handoff nil the
	// caller gets proxy/h1's 501 and the connection ends.
	Handoff bool
	// Timeout, if positive, bounds the exchange from the Handler's
	// return: if the answer's head has not been sent to the caller by
	// then, the caller gets TimeoutAnswer (and its connection ends), the
	// upstream connection is closed, and Exchange is told 504 (or
	// TimeoutAnswer's status) and ErrTimeout; if the answer began, both
	// connections are closed, Exchange told ErrTimeout. The loop checks
	// every 10 ms while such an exchange is in flight: it fires up to
	// that late.
	Timeout time.Duration
	// TimeoutAnswer is the whole answer (status line, fields, blank
	// line, framed body) for Timeout; nil: a plain 504 with
	// Connection: close.
	TimeoutAnswer []byte
	// Unreachable is the whole answer when the upstream cannot be
	// dialed or its TLS handshake fails (after any Retrier gave up);
	// nil: Config.BadGateway. The connection ends after it.
	Unreachable []byte
	// Decide, if not nil, defers the decision to a goroutine of its
	// own, for work a Handler may not do on the loop's goroutine (a
	// policy evaluation that may be slow): the loop calls it once and
	// goes on with the Verdict it returns as if Request had returned
	// that; every other field of this Verdict, and Decide in the one
	// returned, is ignored. Meanwhile nothing more of the caller's
	// connection is read, and the Head Request was given stays as it
	// is: Decide may read it (not keep it). The returned Verdict's
	// memory is the loop's: Decide must not reuse it. If the caller's
	// connection ends meanwhile (a hang-up, Close), the returned
	// Verdict's Exchange is told Done with status 0 and why. A Decide
	// that panics ends the connection, as a Request that does.
	Decide func() Verdict
	// Trailers, with Config.DropRequestTrailers, names the trailer
	// fields of a chunked request that go on to the upstream (matched
	// without regard to case; the head sent should declare them in its
	// Trailer field, RFC 9110 §6.6.2): every other trailer field is
	// checked and dropped. Unused without DropRequestTrailers, which
	// forwards them all.
	Trailers []string
}

// Upstream is where one request goes, when its Handler chooses per
// request (Verdict.Upstream).
type Upstream interface {
	// Key names the upstream's connections: a pooled connection is
	// reused only for a request whose Upstream has the same Key.
	Key() string
	// Dial connects to the upstream; called on a goroutine of its own,
	// bounded by Config.DialTimeout.
	// cfg non-nil: the loop does a TLS client handshake with it over
	// conn (as with Config.UpstreamTLS).
	// notAfter non-zero: the connection carries no new request from that
	// time on (the loop also stops at the upstream's leaf certificate's
	// NotAfter, when TLS).
	Dial(ctx context.Context) (conn net.Conn, cfg *tls.Config, notAfter time.Time, err error)
}

// Retrier is an Exchange that may send its request elsewhere when its
// upstream cannot be reached.
type Retrier interface {
	// Unreachable is told that up could not be dialed or its handshake
	// failed (err); it returns the Upstream to try next, or nil to give
	// up (the caller gets Verdict.Unreachable). Called on the loop's
	// goroutine; must not block. up is nil for Config.Dial's upstream.
	// It is asked only while no byte of the request was sent.
	Unreachable(up Upstream, err error) Upstream
}

// UnreachableAnswerer is an Exchange that words the caller's answer
// when its upstream cannot be reached (after any Retrier gave up), from
// why: a failed handshake's reason, say.
type UnreachableAnswerer interface {
	// UnreachableAnswer is the whole answer (status line, fields, blank
	// line, framed body) for err; nil: Verdict.Unreachable. Called on
	// the loop's goroutine; must not block.
	UnreachableAnswer(err error) []byte
}

// Resender is an Exchange that may send its request again, elsewhere,
// on the status of the answer it got: a route's retries of answers
// (Envoy's retriable status codes). Only a request without a body is
// sent again only once it was relayed whole, and only if its body, if
// any, was at most Config.ResendBodyLimit (the loop keeps a copy of what
// it sent).
type Resender interface {
	// Answered is told the status of the final answer to the request,
	// and its head (valid during the call only), once that is read and
	// before any of it goes to the caller; or 0 and nil when the
	// upstream hung up before the answer began. It
	// returns the Upstream to send the request to instead (the answer is
	// dropped, and the connection it came on closed), or nil to relay
	// the answer. Called on the loop's goroutine; must not block.
	Answered(status int, head *h1.Head) Upstream
}

// Backoffer is a Retrier or Resender that has the loop wait before each
// new attempt it names, as Envoy's retry back-off does between tries.
type Backoffer interface {
	// Backoff is how long to wait before sending the attempt that
	// Unreachable or Answered just named (zero or less: at once). The
	// loop sends it at its first sweep past the wait, every 10 ms while
	// one waits: up to that much later. A Verdict.Timeout runs on
	// meanwhile. Called on the loop's goroutine right after them; must
	// not block.
	Backoff() time.Duration
}

// Exchange is one request's end, as a Handler hears of it.
type Exchange interface {
	// Done is called once, on the loop's goroutine (or, for a
	// Verdict.Decide that returns after Close, on Decide's), when the answer to
	// the request has been queued whole for the caller (err nil), or
	// the exchange ended without one (err says why: the caller or the
	// upstream hung up, a malformed answer, the upstream unreachable).
	// status is the final answer's status code (that of the answer
	// the loop sent for an unreachable upstream or a Verdict.Timeout:
	// 502 and 504 by default), 0 if none began.
	Done(status int, err error)
}

// Caller is a caller's connection as a Handler sees it.
type Caller struct {
	tls *tls.ConnectionState
	// Value is what the caller of Take attached to the connection.
	Value any
	// RemoteAddr is the caller's address, as its connection's
	// RemoteAddr gave it when taken (net/http's Request.RemoteAddr).
	RemoteAddr string
}

// TLS is the connection's TLS state; nil on a plaintext connection.
func (c *Caller) TLS() *tls.ConnectionState { return c.tls }

// Errors a Handler's Exchange may be told of.
var (
	// ErrHungUp: the caller or the upstream closed or reset its
	// connection before the answer was whole.
	ErrHungUp = errors.New("loop: connection closed before the answer was whole")
	// ErrCallerHungUp: the caller closed or reset its connection, or
	// stopped taking the answer, before that was whole (it wraps
	// ErrHungUp): the upstream is not to blame.
	ErrCallerHungUp = fmt.Errorf("%w (the caller's)", ErrHungUp)
	// ErrUnreachable: the upstream could not be dialed or its TLS
	// handshake failed.
	ErrUnreachable = errors.New("loop: upstream unreachable")
	// ErrBodyTooSlow: a request body arrived slower than MinBodyRate.
	ErrBodyTooSlow = errors.New("loop: request body arrived slower than the minimum rate")
	// ErrIdle: a caller sent nothing for ReadIdleTimeout.
	ErrIdle = errors.New("loop: caller idle past the read idle timeout")
	// ErrClosed: the loop was shut down or closed.
	ErrClosed = errors.New("loop: closed")
	// ErrBadRequest: the caller's request broke HTTP/1.1 within its
	// body before the answer began; the caller got the loop's error
	// answer (400, and the like), not the upstream's.
	ErrBadRequest = errors.New("loop: the caller's request body broke HTTP/1.1")
	// ErrTimeout: the exchange outlasted its Verdict.Timeout.
	ErrTimeout = errors.New("loop: exchange outlasted its timeout")
)

// badGateway is Config.BadGateway's default.
var badGateway = []byte("HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\nConnection: close\r\n\r\n502 Bad Gateway\n")

// gatewayTimeout is Verdict.TimeoutAnswer's default.
var gatewayTimeout = []byte("HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\n504 Gateway Timeout\n")

// statusOf reads the status code of an answer the loop or a Handler
// made (its status line), 0 if it has none.
func statusOf(answer []byte) int {
	var h h1.Head
	end := bytes.Index(answer, []byte("\r\n\r\n"))
	if end < 0 || h1.ParseHead(answer[:end+4], false, &h) != nil {
		return 0
	}
	return h.Status
}
