package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
	"github.com/sigil-mesh/sigil/proxy/hop"
	"github.com/sigil-mesh/sigil/proxy/loop"
)

// The inbound's HTTP/1.1 path on an event loop (--inbound-event-loop):
// connections from other sidecars that negotiate HTTP/1.1 are handed,
// after their handshake, to a proxy/loop.Loop, which reads every request
// head and relays the bodies and answers itself, with one goroutine for
// all of them. Each request still goes through the same steps as on the
// goroutine path (inbound.admit: the Connection options, the forged
// identity, the trace, the target's normalization, the policy decision
// and its audit record; inbound.finish: metrics, the access log, taps,
// the span's end), on an *http.Request read from the head; what the app
// gets is the head the request then has, with the body as it came.
// A decision the policy has to evaluate (not in its cache) is made on a
// goroutine of its own (loop.Verdict.Decide), so a slow policy holds up
// only its own request, as on the goroutine path; a cached one, on the
// loop's goroutine. A connection whose next request the loop does not carry (a WebSocket
// upgrade, CONNECT, HTTP/1.0) goes back to the goroutine path's server
// for the rest of its life (loop.Config.Handoff); gRPC never comes this
// way (it negotiates h2).

// newLoop starts the inbound's loop, with the goroutine path's limits:
// its HTTP/1.1 server's header and keep-alive timeouts, the idle timeout
// of its listener, the minimum request body rate; dialApp reaches the
// app.
func (in *inbound) newLoop(dialApp func(context.Context) (net.Conn, error)) (*loop.Loop, error) {
	cfg := in.p.cfg
	bad := h1.AppendResponse(nil, http.StatusBadGateway, http.Header{"Content-Type": {"text/plain; charset=utf-8"},
		"X-Content-Type-Options": {"nosniff"}, "Connection": {"close"}}, []byte("sigil: app unreachable\n"), false)
	handoffs := in.p.loopHandoffs("inbound")
	return loop.New(loop.Config{
		Dial:    dialApp,
		Handler: &inboundLoop{in: in},
		// WebSocket upgrades, CONNECT and HTTP/1.0 go back to the
		// goroutine path, for the rest of their connection.
		Handoff: func(c net.Conn, _ any) {
			handoffs.Inc()
			in.fast.Serve(withConnAbort(context.Background(), c), c)
		},
		// The listener's read idle timeout (idleListener), as on every
		// connection the goroutine path serves.
		HandoffWrap: func(c net.Conn) net.Conn { return idleListener{idle: cfg.IdleTimeout}.wrap(c) },
		// The policy decides on the head: only the trailer fields the
		// head declares reach the app (inboundLoop.Request), as on the
		// goroutine path, and never one h1.CheckTrailer forbids (the
		// identity header among them).
		DropRequestTrailers: true,
		HeaderTimeout:       leanHeaderTimeout,
		IdleTimeout:         leanIdleTimeout,
		ReadIdleTimeout:     cfg.IdleTimeout,
		MinBodyRate:         int64(cfg.MinRequestBodyRate),
		BodyRateWindow:      cfg.MinRequestBodyGrace,
		BadGateway:          bad,
		// The app's idle connections, as many as the goroutine path's
		// client keeps (in.app's MaxIdle).
		MaxIdlePerUpstream: 256,
		ProtocolError:      in.p.metrics.protocolError("inbound"),
		Log:                in.p.log.With("part", "inbound-loop"),
	})
}

// inboundLoop decides the requests of the inbound's loop, on its
// goroutine; those the policy evaluates (its decision not cached), on
// one of their own (loop.Verdict.Decide).
type inboundLoop struct {
	in       *inbound
	head     []byte   // the last head forwarded: the loop copies it at once
	trailers []string // the last Verdict.Trailers: the loop copies them too
}

// Request admits one request head; see the section comment.
func (h *inboundLoop) Request(caller *loop.Caller, head *h1.Head) loop.Verdict {
	in := h.in
	r, err := head.Request()
	if err != nil {
		// As the goroutine path's server: refused before any handler.
		return loop.Verdict{Answer: []byte(h1.ErrorAnswer(err)), Close: true}
	}
	r.TLS = caller.TLS()
	c := &inboundCall{in: in, r: r, start: time.Now()}
	c.rec.ResponseWriter = &c.answer
	if !in.identify(c) {
		return loop.Verdict{Answer: c.answer.bytes(r)}
	}
	if !in.prepare(c) {
		in.finish(c)
		return loop.Verdict{Answer: c.answer.bytes(r)}
	}
	if in.settled(c) {
		return h.authorized(c, head, &h.head, &h.trailers)
	}
	// The policy is evaluated: off the loop's goroutine, which serves
	// every other connection meanwhile.
	return loop.Verdict{Decide: func() loop.Verdict {
		var buf []byte
		var trailers []string
		return h.authorized(c, head, &buf, &trailers)
	}}
}

// authorized is the Verdict on c, whose head is head, once the policy
// decided it (inbound.authorize): refused, or forwarded with its head
// (built in buf) and the trailer fields it declared (in trailers).
func (h *inboundLoop) authorized(c *inboundCall, head *h1.Head, buf *[]byte, trailers *[]string) loop.Verdict {
	in, r := h.in, c.r
	if !in.authorize(c) {
		in.finish(c)
		return loop.Verdict{Answer: c.answer.bytes(r)}
	}
	hop.StripRequestHeaders(r.Header)
	hop.DropForgedIdentity(r.Trailer)
	*buf = h1.AppendRequestHead((*buf)[:0], r, head)
	v := loop.Verdict{Head: *buf, Exchange: c}
	if head.Chunked && len(r.Trailer) > 0 {
		// The declared trailer fields, which the parse moved from the
		// head's Trailer field to r.Trailer and AppendRequestHead
		// declared again, but an identity header; no others.
		*trailers = (*trailers)[:0]
		for k := range r.Trailer {
			*trailers = append(*trailers, k)
		}
		v.Trailers = *trailers
	}
	return v
}

// Done records the call once the app's answer is relayed whole, or the
// exchange ended without one, with the flags the goroutine path sets.
func (c *inboundCall) Done(status int, err error) {
	c.rec.code = status
	switch {
	case err == nil:
	case status == 0:
		// No answer began: the caller hung up (an app failing first is
		// answered 502), or the sidecar stopped.
		c.rec.setFlag(flagDownstreamEnd)
		c.noAnswer = true
	case errors.Is(err, loop.ErrCallerHungUp):
		// The caller left within the answer: the app is not to blame.
		c.rec.setFlag(flagDownstreamEnd)
	case status == http.StatusBadRequest:
		// The caller's body broke its framing before the app answered.
		c.rec.setFlag(flagBadRequest)
	case status == http.StatusBadGateway:
		// The app could not be reached, hung up or broke the framing
		// before its answer began.
		c.rec.setFlag(flagUpstreamFail)
		c.in.p.log.Warn("app unreachable", "app", c.in.p.cfg.App, "error", err)
	default:
		// The app's answer broke off.
		c.rec.setFlag(flagUpstreamReset)
	}
	c.in.finish(c)
}

// answerWriter is the http.ResponseWriter of a request the inbound
// answers itself on the loop (a refusal): it keeps the answer for
// h1.AppendResponse.
type answerWriter struct {
	header http.Header
	code   int
	body   []byte
}

func (w *answerWriter) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

func (w *answerWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *answerWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, b...)
	return len(b), nil
}

// bytes is the whole answer to r.
func (w *answerWriter) bytes(r *http.Request) []byte {
	return h1.AppendResponse(nil, max(w.code, http.StatusOK), w.header, w.body, r.Method == http.MethodHead)
}
