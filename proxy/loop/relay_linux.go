//go:build linux

package loop

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/sigil-mesh/sigil/internal/ascii"
	"github.com/sigil-mesh/sigil/proxy/h1"
)

var crlfcrlf = []byte("\r\n\r\n")

// maxHead bounds a message head, in bytes (proxy/h1's server default).
const maxHead = 64 << 10

// maxLine bounds a chunk-size or trailer line, in bytes.
const maxLine = 4 << 10

// errNoRequest is an upstream that sent bytes when no request was in
// flight; errBytesAfterResponse, bytes in the same read as the end of an
// answer (the next request, if any, had not been sent).
var (
	errNoRequest          = errors.New("loop: bytes from the upstream with no request in flight")
	errBytesAfterResponse = errors.New("loop: bytes from the upstream after a whole answer")
	errPeerExpired        = errors.New("loop: the caller's certificate expired")
)

// relay forwards every complete message head and every body byte of
// s.in to s's peer, and handles a malformed message.
func (l *Loop) relay(s *side) {
	s.ended = false
	if err := l.relayMessages(s); err != nil {
		l.fail(s, err)
		return
	}
	if s.isDown {
		l.arm(s)
	}
	l.hold(s)
}

// hold stops reading s while too much of it waits: pipelined requests
// behind the exchange in flight, or a peer that does not take what it is
// sent; or while its request's Verdict.Decide runs; and reads it again
// when none is so.
func (l *Loop) hold(s *side) {
	p := s.peer
	l.setPoll(s, len(s.in)-s.off > maxQueued || len(p.out)+len(p.pend) > maxQueued || s.closing || s.isDown && s.x.deciding != nil, s.pollOut)
}

func (l *Loop) relayMessages(s *side) error {
	for s.off < len(s.in) && !s.dead {
		b := s.in[s.off:]
		switch s.state {
		case stHead:
			if s.isDown && (s.x.awaiting || s.closing) {
				return nil // one exchange at a time: a pipelined request waits for the response; none after a close
			}
			switch {
			case s.isDown:
			case s.ended:
				return errBytesAfterResponse
			case !s.x.awaiting:
				return errNoRequest // at once, whole head or not: they must never be read as the next answer
			}
			i := bytes.Index(b, crlfcrlf)
			if i < 0 && len(b) <= maxHead {
				return nil
			}
			if i < 0 || i+4 > maxHead {
				return fmt.Errorf("%w: over %d bytes", h1.ErrHeaderTooLarge, maxHead)
			}
			if s.head == nil {
				s.head = new(h1.Head)
			}
			h := s.head
			if err := h1.ParseHead(b[:i+4], s.isDown, h); err != nil {
				return err
			}
			if s.isDown {
				if l.request(s, h, i+4) {
					return nil // its Verdict.Decide runs: the head stays unread until it returns (decided)
				}
			} else if err := l.response(s, h); err != nil {
				return err
			}
			s.off += i + 4
			if err := l.framed(s, h); err != nil {
				return err
			}
		case stBody, stChunkData:
			k := min(int64(len(b)), s.remain)
			l.body(s, b[:k])
			s.off += int(k)
			if s.remain -= k; s.remain > 0 {
				return nil
			}
			if s.state == stChunkData {
				s.state = stChunkCRLF
			} else {
				l.endMessage(s)
			}
		case stChunkCRLF:
			if len(b) < 2 {
				return nil
			}
			if b[0] != '\r' || b[1] != '\n' {
				return fmt.Errorf("%w: chunk data not ended by CRLF", h1.ErrFraming)
			}
			l.body(s, b[:2])
			s.off += 2
			s.state = stChunkSize
		case stChunkSize, stTrailer:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				if len(b) > maxLine {
					return fmt.Errorf("%w: chunk-size or trailer line over %d bytes", h1.ErrFraming, maxLine)
				}
				return nil
			}
			line, _, ok := h1.CutLine(b[:i+1])
			if !ok {
				return fmt.Errorf("%w: chunk-size or trailer line not ended by CRLF", h1.ErrFraming)
			}
			if s.state == stTrailer && len(line) > 0 {
				if err := h1.CheckTrailer(line); err != nil {
					return err
				}
				if s.isDown && l.cfg.DropRequestTrailers && !declared(s.x.trailers, line) {
					s.off += i + 1 // checked, not forwarded
					continue
				}
			}
			l.body(s, b[:i+1])
			s.off += i + 1
			switch {
			case s.state == stTrailer:
				if len(line) == 0 {
					l.endMessage(s)
				}
			default:
				size, err := h1.ParseChunkSize(line)
				if err != nil {
					return err
				}
				if size == 0 {
					s.state = stTrailer
				} else {
					s.state, s.remain = stChunkData, size
				}
			}
		}
	}
	return nil
}

// request decides the request head h (headLen bytes at s.off) that
// caller-facing side s read: forwarded to the upstream (dialed on the
// first), or answered; or, when its Verdict says Decide, it reports
// true and decided goes on once that returns.
func (l *Loop) request(s *side, h *h1.Head, headLen int) (deciding bool) {
	x := s.x
	if !s.notAfter.IsZero() && !l.now.Before(s.notAfter) {
		// As proxy/h1's server: no request past the caller's
		// certificate's expiry; it reconnects with its renewed one.
		l.closePair(s, errPeerExpired)
		return false
	}
	x.awaiting, x.isHEAD, x.close, x.status = true, h.IsHEAD(), h.Close, 0
	// None of the last exchange's times may fire while this one is
	// decided (the sweep looks at every awaiting exchange).
	x.timeoutAt, x.againAt = time.Time{}, time.Time{}
	s.discard = false
	var v Verdict
	var key string // v.Upstream's
	if l.cfg.Handler != nil {
		var ok bool
		if v, key, ok = l.decide(s, h); !ok {
			return false
		}
	}
	if v.Decide != nil {
		l.deferDecision(s, headLen, v.Decide)
		return true
	}
	l.proceed(s, h, v, key)
	return false
}

// proceed acts on v, the Verdict on request head h that caller-facing
// side s read, whose Upstream's key is key.
func (l *Loop) proceed(s *side, h *h1.Head, v Verdict, key string) {
	x, up := s.x, s.peer
	if v.Handoff {
		x.awaiting = false
		if l.cfg.Handoff != nil {
			l.handoff(s) // at the head: the request is read again from its start
			return
		}
		v = Verdict{Answer: []byte(h1.ErrorAnswer(h1.ErrUnsupported)), Close: true, Exchange: v.Exchange}
	}
	x.ex = v.Exchange
	x.close = x.close || v.Close
	if v.Answer != nil {
		// A client that waits for 100 Continue may not send the body it
		// announced after a final answer: the connection cannot be read
		// on safely, so it ends (RFC 9110 §10.1.1; net/http does the same).
		x.close = x.close || h.Expect100 && (h.Chunked || h.ContentLength > 0)
		// Answered here: the body, if any, is read and dropped, and the
		// next request waits until the answer is queued (it is, now).
		s.discard = true
		x.awaiting = false
		x.status = statusOf(v.Answer)
		l.stage(s, v.Answer)
		l.endExchange(x, nil)
		if x.close {
			s.closing = true
		}
		return
	}
	// The upstream's connection is kept unless its own hop says close:
	// the caller's Connection field is not forwarded (hop-by-hop), a
	// Handler's head may carry one.
	x.upClose = v.Head != nil && saysClose(v.Head)
	x.expect = h.Expect100 && (h.Chunked || h.ContentLength > 0)
	x.wrote = false
	x.trailers = append(x.trailers[:0], v.Trailers...)
	x.timeoutAnswer, x.unreachable = copyAnswer(x.timeoutAnswer, v.TimeoutAnswer), copyAnswer(x.unreachable, v.Unreachable)
	if v.Timeout > 0 {
		x.timeoutAt = l.cfg.Now().Add(v.Timeout)
		l.timed()
	}
	if up.adopted && up.key != key {
		l.resetUpstream(up) // not expected: a clean exchange's connection went back to the pool
	}
	up.upstream, up.key = v.Upstream, key
	connected := up.adopted || up.dialing || up.dead || l.takeIdle(up)
	dst := stageBuf(up)
	mark := len(*dst)
	if v.Head != nil {
		*dst = append(*dst, v.Head...)
	} else {
		*dst = h.AppendForward(*dst)
	}
	// A request that can be sent again if the upstream's kept
	// connection turns out closed before any byte of the answer (it
	// raced its keep-alive timeout): no body, an idempotent method, a
	// reused connection (proxy/h1's client decides the same way).
	x.replay = x.replay[:0]
	if up.served > 0 && !h.Chunked && h.ContentLength <= 0 && idempotent(h.Method) {
		x.replay = append(x.replay, (*dst)[mark:]...)
	}
	x.again, x.againBody, x.next = x.again[:0], 0, nil
	if _, ok := v.Exchange.(Resender); ok && (!h.Chunked && h.ContentLength <= 0 || l.resendBodyLimit() > 0 && h.ContentLength <= l.resendBodyLimit()) {
		x.again = append(x.again, (*dst)[mark:]...) // and the body, as it is relayed (body)
	}
	l.markDirty(up)
	if !connected {
		l.dial(up)
	}
}

// declared reports whether trailer field line (checked: h1.CheckTrailer)
// has one of names as its name, without regard to case.
func declared(names []string, line []byte) bool {
	name, _, _ := bytes.Cut(line, []byte(":"))
	for _, n := range names {
		if ascii.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// saysClose reports whether head, a request head (start line, fields,
// blank line), has a Connection field with the close option.
func saysClose(head []byte) bool {
	for rest := head; len(rest) > 0; {
		line, more, _ := bytes.Cut(rest, []byte("\n"))
		rest = more
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !ascii.EqualFold(name, "connection") {
			continue
		}
		for opt := range bytes.SplitSeq(value, []byte(",")) {
			if ascii.EqualFold(bytes.TrimSpace(opt), "close") {
				return true
			}
		}
	}
	return false
}

// keyOf is the pool's key for u (nil: Config.Dial's, "").
func keyOf(u Upstream) string {
	if u == nil {
		return ""
	}
	return u.Key()
}

// copyAnswer is answer copied into buf's memory; nil if answer is.
func copyAnswer(buf, answer []byte) []byte {
	if answer == nil {
		return nil
	}
	return append(buf[:0], answer...)
}

// idempotent reports whether a request with this method may be sent
// twice (RFC 9110 §9.2.2).
func idempotent(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// decide asks the Handler about h, and the Upstream it names for its
// key. A Handler (or Upstream.Key) that panics fails only this
// connection: the pair is closed, the panic logged; ok is false.
func (l *Loop) decide(s *side, h *h1.Head) (v Verdict, key string, ok bool) {
	type verdictKey struct {
		v   Verdict
		key string
	}
	vk, err := guard(l, "Handler.Request", func() verdictKey {
		v := l.cfg.Handler.Request(&s.caller, h)
		return verdictKey{v, keyOf(v.Upstream)}
	})
	if err != nil {
		s.x.awaiting = false
		l.closePair(s, err)
		return Verdict{}, "", false
	}
	return vk.v, vk.key, true
}

// response checks the response head h that upstream side s read and
// queues it, rewritten, for the caller.
func (l *Loop) response(s *side, h *h1.Head) error {
	x := s.x
	switch {
	case !x.awaiting:
		return errNoRequest
	case h.Status == 101:
		return h1.ErrUnsupported // the Upgrade was refused with the request: the upstream's fault
	case h.Status >= 200:
		if len(x.again) > 0 && s.peer.state == stHead { // the request relayed whole
			if x.next, x.nextK = l.answered(x.ex.(Resender), h.Status, h); x.next != nil {
				return errResend
			}
		}
		x.status = h.Status
		x.answerMark = len(*stageBuf(s.peer))
		// The caller waits for 100 Continue, none came, and its body is
		// not all here: it may never send it, so its connection ends
		// after this answer (as proxy/h1's server ends it), not read on
		// with its next request taken for that body.
		x.close = x.close || x.expect && s.peer.state != stHead
	case h.Status == 100:
		x.expect = false
	}
	dst := stageBuf(s.peer)
	*dst = h.AppendForward(*dst)
	if h.Status >= 200 && x.close {
		*dst = append((*dst)[:len(*dst)-2], "Connection: close\r\n\r\n"...)
	}
	l.markDirty(s.peer)
	return nil
}

// body passes b, a part of the body s is reading, on to s's peer, or
// drops it.
func (l *Loop) body(s *side, b []byte) {
	if s.discard {
		return
	}
	l.stage(s.peer, b)
	if x := s.x; s.isDown && len(x.again) > 0 {
		if x.againBody += int64(len(b)); x.againBody > l.resendBodyLimit() {
			x.again = x.again[:0] // too large to keep: sent once
		} else {
			x.again = append(x.again, b...)
		}
	}
}

// resendBodyLimit is Config.ResendBodyLimit with its default.
func (l *Loop) resendBodyLimit() int64 {
	switch n := l.cfg.ResendBodyLimit; {
	case n == 0:
		return 1 << 20
	case n < 0:
		return 0
	default:
		return n
	}
}

// framed sets s's framing state from the head just relayed.
func (l *Loop) framed(s *side, h *h1.Head) error {
	x := s.x
	if s.isDown {
		s.bodyStart, s.bodyGot, s.bodyGraced = time.Time{}, 0, false
		switch {
		case h.Chunked:
			s.state = stChunkSize
		case h.ContentLength > 0:
			s.state, s.remain = stBody, h.ContentLength
		}
		// A request with neither has no body (RFC 9112 §6.3).
		return nil
	}
	if h.Status < 200 {
		return nil // interim (100 Continue, 103): the final response follows
	}
	// The upstream's Connection: close ends its own connection, not the
	// caller's: the field is hop-by-hop, and the caller's next request
	// takes another.
	x.upClose = x.upClose || h.Close
	switch {
	case x.isHEAD || h.Status == 204 || h.Status == 304:
		l.endMessage(s)
	case h.Chunked:
		s.state = stChunkSize
	case h.ContentLength > 0:
		s.state, s.remain = stBody, h.ContentLength
	case h.ContentLength == 0:
		l.endMessage(s)
	default:
		return h1.ErrUnsupported // read until close
	}
	return nil
}

// endMessage ends the message s was reading. At the end of a response
// the exchange is over: the pair closes if either party asked, or the
// next pipelined request, if any, goes.
func (l *Loop) endMessage(s *side) {
	s.state = stHead
	if s.isDown {
		s.discard = false
		return
	}
	x := s.x
	x.awaiting, s.ended = false, true
	s.served++
	l.endExchange(x, nil)
	down := s.peer
	// s is unconnected from here on (relayMessages stops), unless the
	// pair ends with x.close.
	switch {
	case s.off < len(s.in):
		// Bytes after the answer, in the same read: never read as the
		// next request's answer (which may be going out now, pipelined).
		l.protocolError(h1.ReasonBytesAfterResponse)
		l.resetUpstream(s)
	case !x.upClose:
		l.release(s)
	case !x.close:
		l.resetUpstream(s)
	}
	if x.close {
		down.closing = true
		l.markDirty(down)
		return
	}
	if down.off < len(down.in) {
		l.relay(down)
	} else {
		l.arm(down)
	}
}

// fail handles a message s could not read: the upstream's by
// failResponse, the caller's by failRequest.
func (l *Loop) fail(s *side, err error) {
	if s.isDown {
		l.failRequest(s, err)
	} else {
		l.failResponse(s, err)
	}
}

// failRequest handles a request that could not be read. Its head: a
// request the loop does not carry goes to Config.Handoff if set; else
// proxy/h1's error answer, and the connection ends. Its body, before
// the answer began: the upstream is closed (a request not yet sent
// never reaches it), the caller gets the error answer and the
// connection ends, as proxy/h1's server answers a body that breaks
// before its handler answered. Otherwise the pair ends.
func (l *Loop) failRequest(s *side, err error) {
	x := s.x
	switch {
	case s.state == stHead && !x.awaiting:
		if l.cfg.Handoff != nil && errors.Is(err, h1.ErrUnsupported) && !s.closing {
			l.handoff(s)
			return
		}
	case s.discard || !x.awaiting || x.status != 0:
		l.closePair(s, err)
		return
	default:
		l.resetUpstream(s.peer)
		x.awaiting = false
		err = errors.Join(ErrBadRequest, err) // the caller's fault: an Exchange tells it from an upstream's
	}
	answer := h1.ErrorAnswer(err)
	x.status = statusOf([]byte(answer))
	l.stage(s, []byte(answer))
	l.endExchange(x, err)
	s.discard, s.closing = true, true
	l.hold(s)
}
