//go:build linux

package main

import (
	"bytes"
	"errors"
)

var crlfcrlf = []byte("\r\n\r\n")

// relay forwards every complete message head and every body byte of
// s.in to s's peer, and handles a malformed message.
func (l *loop) relay(s *side) {
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
// sent; and reads it again when neither is so.
func (l *loop) hold(s *side) {
	p := s.peer
	l.setPoll(s, len(s.in)-s.off > maxQueued || len(p.out)+len(p.pend) > maxQueued || s.closing, s.pollOut)
}

// stageBuf is where plaintext for s is staged.
func stageBuf(s *side) *[]byte {
	if s.tc != nil {
		return &s.pend
	}
	return &s.out
}

func (l *loop) relayMessages(s *side) error {
	p := s.peer
	for s.off < len(s.in) && !s.dead {
		b := s.in[s.off:]
		switch s.state {
		case stHead:
			if s.isDown && (s.x.awaiting || s.closing) {
				return nil // one exchange at a time: a pipelined request waits for the response; none after a close
			}
			i := bytes.Index(b, crlfcrlf)
			if i < 0 && len(b) <= maxHead {
				return nil
			}
			if i < 0 || i+4 > maxHead {
				return errHeadTooBig
			}
			dst := stageBuf(p)
			var h head
			var err error
			if *dst, h, err = appendHead(*dst, b[:i+4], s.isDown); err != nil {
				return err
			}
			l.markDirty(p)
			s.off += i + 4
			if err := l.framed(s, h); err != nil {
				return err
			}
		case stBody, stChunkData:
			k := min(int64(len(b)), s.remain)
			l.stage(p, b[:k])
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
				return errMalformed
			}
			l.stage(p, b[:2])
			s.off += 2
			s.state = stChunkSize
		case stChunkSize, stTrailer:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				if len(b) > 4096 {
					return errMalformed
				}
				return nil
			}
			line, _, ok := cutCRLF(b[:i+1])
			if !ok || s.state == stTrailer && len(line) > 0 && checkTrailer(line) != nil {
				return errMalformed
			}
			l.stage(p, b[:i+1])
			s.off += i + 1
			switch {
			case s.state == stTrailer:
				if len(line) == 0 {
					l.endMessage(s)
				}
			default:
				size, err := chunkSize(line)
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

// framed sets s's framing state from the head just relayed.
func (l *loop) framed(s *side, h head) error {
	x := s.x
	if s.isDown {
		x.awaiting, x.isHEAD, x.close = true, h.isHEAD, h.close
		switch {
		case h.chunked:
			s.state = stChunkSize
		case h.contentLength > 0:
			s.state, s.remain = stBody, h.contentLength
		}
		// A request with neither has no body (RFC 9112 §6.3).
		return nil
	}
	switch {
	case !x.awaiting:
		return errors.New("floor: response without a request")
	case h.status == 101:
		return errUnsupported // the Upgrade was refused with the request, so this is the upstream's fault
	case h.status < 200:
		return nil // interim (100 Continue, 103): the final response follows
	}
	x.close = x.close || h.close
	switch {
	case x.isHEAD || h.status == 204 || h.status == 304:
		l.endMessage(s)
	case h.chunked:
		s.state = stChunkSize
	case h.contentLength > 0:
		s.state, s.remain = stBody, h.contentLength
	case h.contentLength == 0:
		l.endMessage(s)
	default:
		return errUnsupported // read until close
	}
	return nil
}

// endMessage ends the message s was reading. At the end of a response
// the exchange is over: the pair closes if either party asked, or the
// next pipelined request, if any, goes.
func (l *loop) endMessage(s *side) {
	s.state = stHead
	if s.isDown {
		return
	}
	s.x.awaiting = false
	down := s.peer
	if s.x.close {
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

// fail answers a malformed or unsupported request with an error status
// and closes; any other failure closes the pair.
func (l *loop) fail(s *side, err error) {
	if !s.isDown || s.x.awaiting || s.state != stHead {
		l.closePair(s)
		return
	}
	status := "400 Bad Request"
	switch {
	case errors.Is(err, errUnsupported):
		status = "501 Not Implemented"
	case errors.Is(err, errHeadTooBig):
		status = "431 Request Header Fields Too Large"
	}
	l.stage(s, []byte("HTTP/1.1 "+status+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
	s.closing = true
	l.hold(s)
}
