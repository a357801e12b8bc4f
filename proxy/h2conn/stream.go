package h2conn

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"

	"golang.org/x/net/http2"
)

// stream is one request and its response on a connection.
type stream struct {
	c  *conn
	id uint32

	// Guarded by c.mu.
	sendWin    int64
	recvWin    int64
	unacked    int     // bytes read (or padding) not yet returned on the stream window
	rbuf       recvBuf // received body bytes not yet read
	rerr       error   // what Read returns once rbuf is empty: io.EOF or a failure
	sendErr    error   // why nothing more can be sent
	localEnd   bool    // END_STREAM sent
	remoteEnd  bool    // END_STREAM received
	failed     bool
	released   bool         // left the connection: its unread bytes no longer count
	trailerTo  *http.Header // where received trailers go, by the reader at EOF (a map made then if nil); nil: none taken
	gotTrail   http.Header  // trailers received, not yet handed over
	headQueued bool         // the final response head is queued (server)
	expect     bool         // server: the request body's first read sends 100 Continue
	bodyEOF    bool         // client: the response body was read to its end (its reader only)
	stop       func() bool  // client: stops watching the request's context

	// recvc and sendc hold one token each: rbuf, rerr or resp changed;
	// a send window grew, or sendErr was set. Each has one waiter (the
	// body's reader; the sender), who makes it under c.mu when it first
	// waits, so a stream nobody waits on allocates neither.
	recvc   chan struct{}
	sendc   chan struct{}
	cancel  context.CancelFunc // the server handler's context
	resp    *http.Response     // client: the final response head, until await takes it
	req     *http.Request      // client: the request
	gotHead bool               // client: the final response head arrived (read loop only)
	cont    chan struct{}      // client with Expect: 100-continue: closed at 100 Continue, the final response or fail
	// wrote holds the writer's token once it is done with a body lent
	// without a copy (send, over dataChunk bytes), made at the first;
	// unwritten is how many of its bytes it never sent (set before the
	// token). ended is set when the stream fails: the writer then stops
	// sending what it was lent.
	wrote     chan struct{}
	unwritten int64
	ended     atomic.Bool
	// hdrAt is where the first byte of the request's HEADERS went in the
	// bytes written on the connection (client; -1: not written). Set by
	// the writer, read once it has stopped (conn.close).
	hdrAt int64
}

func (c *conn) newStream(id uint32) *stream {
	s := new(stream)
	c.initStream(s, id)
	return s
}

// initStream readies s, allocated by the caller (with the side's own
// per-stream state, in one allocation), as stream id.
func (c *conn) initStream(s *stream, id uint32) {
	s.c, s.id, s.sendWin, s.recvWin = c, id, c.initSend, int64(c.lim.StreamWindow)
	s.hdrAt = -1
}

// wakeRecv and wakeSend wake the stream's reader and sender; c.mu held.
func (s *stream) wakeRecv() { wake(s.recvc) }

func (s *stream) wakeSend() { wake(s.sendc) }

func wake(ch chan struct{}) {
	if ch == nil {
		return // nobody waits yet: the first waiter checks the state first
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// wait waits for a token on *ch (s.recvc or s.sendc), making the channel
// at the first wait; c.mu held on entry, released on return.
func (s *stream) wait(ch *chan struct{}) {
	if *ch == nil {
		*ch = make(chan struct{}, 1)
	}
	token := *ch
	s.c.mu.Unlock()
	<-token
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
	s.ended.Store(true)
	if s.sendErr == nil {
		s.sendErr = err
	}
	if s.rerr == nil {
		s.rerr = err
	}
	cancel := s.cancel
	s.wakeRecv()
	s.wakeSend()
	if s.cont != nil {
		closeOnce(s.cont)
	}
	c.mu.Unlock()
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
		if s.rbuf.len() > 0 {
			n := s.rbuf.read(p)
			if s.rbuf.len() == 0 && s.remoteEnd {
				// Nothing more arrives: the buffer goes back.
				s.rbuf.free()
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
				if t := *s.trailerTo; t != nil {
					for k, v := range s.gotTrail {
						t[k] = v
					}
				} else {
					*s.trailerTo = s.gotTrail
				}
				s.gotTrail = nil
			}
			c.mu.Unlock()
			return 0, err
		}
		s.wait(&s.recvc)
	}
}

// send queues head (HEADERS, may be nil), p as DATA as flow control
// allows, and tail (trailers, may be nil); end ends the stream with the
// last of them. Frames that fit the windows are queued together so they
// leave in one write. Up to dataChunk bytes of p are copied and sent
// without waiting; more are lent to the writer uncopied, and send waits
// until it has written them (a copy would cost more than the wait, and
// the writer sends a lent body a frame per turn with other streams'
// frames, so the trailers after it are queued once it is out).
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
		lend := len(p) > dataChunk
		n := min(int64(len(p)), s.sendWin, c.sendWin)
		if !lend {
			n = min(n, dataChunk)
		}
		if n <= 0 && len(p) > 0 {
			if len(q) > 0 {
				if err := c.w.enqueue(q...); err != nil {
					c.mu.Unlock()
					return err
				}
				head = nil
			}
			s.wait(&s.sendc)
			continue
		}
		last := int(n) == len(p)
		// Trailers after a lent body wait until it is written.
		holdTail := lend && tail != nil
		if n > 0 {
			s.sendWin -= n
			c.sendWin -= n
			df := frame{kind: kData, stream: s.id, end: end && last && tail == nil}
			if lend {
				if s.wrote == nil {
					s.wrote = make(chan struct{}, 1)
				}
				df.data, df.owner = p[:n], s
			} else {
				df.data, df.pool = getData(p[:n]), true
			}
			q = append(q, df)
		}
		if last && tail != nil && !holdTail {
			t := *tail
			t.end = end
			q = append(q, t)
		}
		ends := last && end && !holdTail
		if ends {
			if len(q) == 0 {
				q = append(q, frame{kind: kData, stream: s.id, end: true})
			} else if n == 0 && tail == nil {
				q[len(q)-1].end = true
			}
			s.localEnd = true
		}
		err := c.w.enqueue(q...)
		done := ends && s.remoteEnd
		c.mu.Unlock()
		if err != nil {
			return err
		}
		if lend && n > 0 {
			if err := s.written(); err != nil {
				return err
			}
		}
		head, p = nil, p[n:]
		if last && !holdTail {
			if done {
				c.forget(s)
			}
			return nil
		}
	}
}

// written waits until the writer is done with the body lent to it, and
// takes back the connection window of what it did not send (the stream
// ended first), so other streams can use it.
func (s *stream) written() error {
	c := s.c
	select {
	case <-s.wrote:
	case <-c.writerDone:
		return errWriterClosed
	}
	if s.unwritten == 0 {
		return nil
	}
	c.mu.Lock()
	c.sendWin += s.unwritten
	s.unwritten = 0
	for _, o := range c.streams {
		o.wakeSend()
	}
	err := s.sendErr
	c.mu.Unlock()
	if err == nil {
		err = errLentDropped
	}
	return err
}

// errLentDropped is why a send ends whose stream was reset while the
// writer held its body.
var errLentDropped = errors.New("h2conn: stream reset before its body was written")

// continued wakes a sender waiting for 100 Continue.
func (s *stream) continued() {
	s.c.mu.Lock()
	if s.cont != nil {
		closeOnce(s.cont)
	}
	s.c.mu.Unlock()
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
	if f != nil && s.trailerTo != nil {
		s.gotTrail = headerMap(f.RegularFields())
	}
	s.remoteEnd = true
	if s.rerr == nil {
		s.rerr = io.EOF
	}
	done := s.localEnd
	s.wakeRecv()
	c.mu.Unlock()
	if done {
		c.forget(s)
	}
}
