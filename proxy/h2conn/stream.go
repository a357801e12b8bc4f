package h2conn

import (
	"context"
	"io"
	"net/http"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one request and its response on a connection.
type stream struct {
	c  *conn
	id uint32

	// Guarded by c.mu.
	sendWin    int64
	recvWin    int64
	unacked    int    // bytes read (or padding) not yet returned on the stream window
	rbuf       []byte // received body bytes, read from roff
	roff       int
	rerr       error // what Read returns once rbuf is empty: io.EOF or a failure
	sendErr    error // why nothing more can be sent
	localEnd   bool  // END_STREAM sent
	remoteEnd  bool  // END_STREAM received
	failed     bool
	released   bool        // left the connection: its unread bytes no longer count
	trailer    http.Header // where received trailers go, by the reader at EOF
	gotTrail   http.Header // trailers received, not yet handed over
	headQueued bool        // the final response head is queued (server)

	recvc    chan struct{}      // one token: rbuf or rerr changed
	sendc    chan struct{}      // one token: a send window grew, or sendErr was set
	failedc  chan struct{}      // closed on fail
	cancel   context.CancelFunc // the server handler's context
	response chan *http.Response
	req      *http.Request // client: the request
	gotHead  bool          // client: the final response head arrived (read loop only)
	cont     chan struct{} // client: closed at 100 Continue or the final response
	// hdrAt is where the first byte of the request's HEADERS went in the
	// bytes written on the connection (client; -1: not written). Set by
	// the writer, read once it has stopped (conn.close).
	hdrAt int64
}

func (c *conn) newStream(id uint32) *stream {
	return &stream{c: c, id: id, sendWin: c.initSend, recvWin: int64(c.lim.StreamWindow),
		recvc: make(chan struct{}, 1), sendc: make(chan struct{}, 1), failedc: make(chan struct{}), hdrAt: -1}
}

func (s *stream) wakeRecv() {
	select {
	case s.recvc <- struct{}{}:
	default:
	}
}

func (s *stream) wakeSend() {
	select {
	case s.sendc <- struct{}{}:
	default:
	}
}

// fail ends the stream's sending and, unless the body already ended,
// its reading with err.
func (s *stream) fail(err error) {
	c := s.c
	c.mu.Lock()
	if s.failed {
		c.mu.Unlock()
		return
	}
	s.failed = true
	if s.sendErr == nil {
		s.sendErr = err
	}
	if s.rerr == nil {
		s.rerr = err
	}
	cancel := s.cancel
	c.mu.Unlock()
	close(s.failedc)
	s.wakeRecv()
	s.wakeSend()
	if cancel != nil {
		cancel()
	}
}

// read reads the stream's body, returning stream window to the peer as
// the bytes are consumed.
func (s *stream) read(p []byte) (int, error) {
	c := s.c
	for {
		c.mu.Lock()
		if s.roff < len(s.rbuf) {
			n := copy(p, s.rbuf[s.roff:])
			s.roff += n
			if s.roff == len(s.rbuf) {
				s.rbuf, s.roff = s.rbuf[:0], 0
				if s.remoteEnd {
					// Nothing more arrives: the buffer goes back.
					putData(s.rbuf)
					s.rbuf = nil
				}
			}
			if !s.released {
				c.release(n)
			}
			s.unacked += n
			var inc int
			if !s.remoteEnd && !s.failed && s.unacked >= int(c.lim.StreamWindow)/4 {
				inc, s.unacked = s.unacked, 0
				s.recvWin += int64(inc)
			}
			c.mu.Unlock()
			if inc > 0 {
				c.w.enqueue(frame{kind: kWindowUpdate, stream: s.id, n: uint32(inc)})
			}
			c.credit()
			return n, nil
		}
		if err := s.rerr; err != nil {
			if err == io.EOF && s.gotTrail != nil {
				// The reader's goroutine owns the map it was given.
				for k, v := range s.gotTrail {
					s.trailer[k] = v
				}
				s.gotTrail = nil
			}
			c.mu.Unlock()
			return 0, err
		}
		c.mu.Unlock()
		<-s.recvc
	}
}

// send queues head (HEADERS, may be nil), p as DATA as flow control
// allows, and tail (trailers, may be nil); end ends the stream with the
// last of them. Frames that fit the windows are queued together so they
// leave in one write.
func (s *stream) send(head *frame, p []byte, tail *frame, end bool) error {
	c := s.c
	for {
		c.mu.Lock()
		if s.sendErr != nil {
			err := s.sendErr
			c.mu.Unlock()
			return err
		}
		var fs [3]frame
		q := fs[:0]
		if head != nil {
			q = append(q, *head)
			s.headQueued = true
		}
		n := min(int64(len(p)), s.sendWin, c.sendWin, dataChunk)
		if n <= 0 && len(p) > 0 {
			if len(q) > 0 {
				if err := c.w.enqueue(q...); err != nil {
					c.mu.Unlock()
					return err
				}
				head = nil
			}
			c.mu.Unlock()
			select {
			case <-s.sendc:
			case <-s.failedc:
			}
			continue
		}
		last := int(n) == len(p)
		if n > 0 {
			s.sendWin -= n
			c.sendWin -= n
			q = append(q, frame{kind: kData, stream: s.id, data: getData(p[:n]), pool: true, end: end && last && tail == nil})
		}
		if last && tail != nil {
			t := *tail
			t.end = end
			q = append(q, t)
		}
		if last && end {
			if len(q) == 0 {
				q = append(q, frame{kind: kData, stream: s.id, end: true})
			} else if n == 0 && tail == nil {
				q[len(q)-1].end = true
			}
			s.localEnd = true
		}
		err := c.w.enqueue(q...)
		done := last && end && s.remoteEnd
		c.mu.Unlock()
		if err != nil {
			return err
		}
		head, p = nil, p[n:]
		if last {
			if done {
				c.forget(s)
			}
			return nil
		}
	}
}

// trailers takes trailers received on s (HEADERS with END_STREAM after
// the head) into its trailer map and ends its body.
func (s *stream) trailers(f *http2.MetaHeadersFrame) { s.end(f) }

// endRemote marks END_STREAM received on a frame without body bytes.
func (s *stream) endRemote() { s.end(nil) }

// end marks END_STREAM received, with the trailers of f when f is not
// nil and the stream accepts trailers, and forgets the stream once both
// sides have ended.
func (s *stream) end(f *http2.MetaHeadersFrame) {
	c := s.c
	c.mu.Lock()
	if f != nil && s.trailer != nil {
		s.gotTrail = http.Header{}
		for _, hf := range f.RegularFields() {
			k := http.CanonicalHeaderKey(hf.Name)
			s.gotTrail[k] = append(s.gotTrail[k], hf.Value)
		}
	}
	s.remoteEnd = true
	if s.rerr == nil {
		s.rerr = io.EOF
	}
	done := s.localEnd
	c.mu.Unlock()
	s.wakeRecv()
	if done {
		c.forget(s)
	}
}

// headerFields turns h into HPACK fields after pseudo, lower-casing names
// and leaving out what HTTP/2 forbids (RFC 9113, section 8.2.2).
func headerFields(pseudo []hpack.HeaderField, h http.Header) []hpack.HeaderField {
	fs := pseudo
	for k, vs := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		lk := lowerHeader(k)
		switch lk {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade", "host":
			continue
		case "te":
			for _, v := range vs {
				if v == "trailers" {
					fs = append(fs, hpack.HeaderField{Name: "te", Value: v})
				}
			}
			continue
		}
		for _, v := range vs {
			fs = append(fs, hpack.HeaderField{Name: lk, Value: v, Sensitive: lk == "authorization" || lk == "cookie" && len(v) < 20})
		}
	}
	return fs
}

// lowerHeader lower-cases a header name without allocating when it
// already is.
func lowerHeader(k string) string {
	for i := 0; i < len(k); i++ {
		if c := k[i]; 'A' <= c && c <= 'Z' {
			b := []byte(k)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return k
}
