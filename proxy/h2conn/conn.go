package h2conn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h2abuse"
	"golang.org/x/net/http2"
)

// Limits bound what one connection accepts from its peer and buffers for
// it. The zero value of a field takes its default.
type Limits struct {
	// MaxStreams is SETTINGS_MAX_CONCURRENT_STREAMS: the streams the peer
	// may have open at once (default 256). A server holds a stream's slot
	// until its handler returns.
	MaxStreams uint32
	// StreamWindow is each stream's receive window in bytes (default
	// 256 KiB): what a peer may send on a stream its consumer has not read.
	StreamWindow int32
	// ConnBuffer is how many bytes of unread bodies a connection buffers
	// before its connection window waits for readers (default 16 MiB).
	ConnBuffer int
	// MaxHeaderListSize is SETTINGS_MAX_HEADER_LIST_SIZE in bytes as RFC
	// 9113 counts them (default 64 KiB, the h1 server's header limit).
	MaxHeaderListSize uint32
	// MaxResets and MaxControlFrames bound the RST_STREAM frames and the
	// control frames without a request (SETTINGS, PING, PRIORITY, zero
	// WINDOW_UPDATE, empty DATA without END_STREAM) the peer may send per
	// Window (defaults 200 and 1000 per 10 s, the proxy's
	// --http2-max-resets and --http2-max-control-frames); negative: no
	// limit. Control frames earned by progress (package h2abuse: one per
	// HEADERS or DATA frame sent, and per stream the peer opened) are not
	// counted, nor resets of up to half the peer's streams.
	MaxResets, MaxControlFrames int
	Window                      time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxStreams == 0 {
		l.MaxStreams = 256
	}
	if l.StreamWindow <= 0 {
		l.StreamWindow = 256 << 10
	}
	if l.ConnBuffer <= 0 {
		l.ConnBuffer = 16 << 20
	}
	if l.MaxHeaderListSize == 0 {
		l.MaxHeaderListSize = 64 << 10
	}
	if l.MaxResets == 0 {
		l.MaxResets = 200
	}
	if l.MaxControlFrames == 0 {
		l.MaxControlFrames = 1000
	}
	if l.Window <= 0 {
		l.Window = 10 * time.Second
	}
	return l
}

// connWindow is the connection receive window each side announces; it is
// returned as data arrives (see the package doc), so it only needs to
// cover the bandwidth-delay product.
const connWindow = 4 << 20

// readBufSize is the reader's buffer: many frames per read call.
const readBufSize = 32 << 10

// role is what differs between the client and the server side of a
// connection.
type role interface {
	headers(f *http2.MetaHeadersFrame) error
	peerGoAway(f *http2.GoAwayFrame)
	forgot(s *stream)
}

// conn is the state both sides share: streams, flow control windows and
// the read loop.
type conn struct {
	nc     net.Conn
	w      *writer
	fr     *http2.Framer
	br     *bufio.Reader
	lim    Limits
	role   role
	now    func() time.Time
	server bool // serving the peer's streams
	// onAbuse, if set, is told why the peer is cut off (a Reason value).
	onAbuse func(peer net.Addr, reason string)

	mu          sync.Mutex
	streams     map[uint32]*stream
	sendWin     int64 // the connection's send window
	initSend    int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMax     uint32
	recvWin     int64 // what the peer may still send on the connection
	buffered    int   // bytes in streams' buffers not yet read
	withheld    int   // received bytes not returned while buffered > ConnBuffer
	owed        int   // received bytes to return on the connection window
	goingAway   bool  // GOAWAY sent or received: no new streams
	err         error // why the connection ended; nil while it runs
	done        chan struct{}
	settingsc   chan struct{} // closed at the peer's first SETTINGS
	lastRemote  uint32        // highest stream the peer opened
	inUse       uint32        // streams open (client), handlers running (server)
	idleTimeout time.Duration
	idleTimer   *time.Timer
	framesRead  atomic.Uint64
	writerDone  chan struct{} // closed when the writer stops (nil before start)

	// count judges the peer's resets and control frames (Reset and
	// Control from the read loop only; Progress from the writer too).
	count *h2abuse.Counter

	// abuseDrain is how long the streams already open may run once the
	// peer broke the frame limits (Server.AbuseDrain; 0: closed at once).
	abuseDrain time.Duration

	// Read loop only.
	sawSettings bool
	calmed      bool   // GOAWAY ENHANCE_YOUR_CALM sent, draining
	opened      uint32 // highest stream the peer opened, for count
	blocks      *blockReader
}

func newConn(nc net.Conn, lim Limits, r role) *conn {
	lim = lim.withDefaults()
	c := &conn{nc: nc, w: newWriter(nc), lim: lim, role: r, now: time.Now,
		streams: map[uint32]*stream{}, sendWin: 65535, initSend: 65535, peerMax: 100,
		recvWin: connWindow, done: make(chan struct{}), settingsc: make(chan struct{})}
	c.count = h2abuse.NewCounter(lim.MaxResets, lim.MaxControlFrames, lim.Window, func() time.Time { return c.now() })
	c.w.count = c.count
	c.br = bufio.NewReaderSize(nc, readBufSize)
	c.fr = http2.NewFramer(nil, c.br)
	// A DATA frame's struct is reused for the next: data copies its bytes
	// before the next read.
	c.fr.SetReuseFrames()
	c.blocks = newBlockReader(lim.MaxHeaderListSize)
	c.fr.SetMaxReadFrameSize(1 << 20)
	return c
}

// settings are what this side announces first.
func (c *conn) settings(server bool) []frame {
	s := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: uint32(c.lim.StreamWindow)},
		{ID: http2.SettingMaxFrameSize, Val: 1 << 20},
		{ID: http2.SettingMaxHeaderListSize, Val: c.lim.MaxHeaderListSize},
	}
	if server {
		s = append(s, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.lim.MaxStreams})
	} else {
		s = append(s, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	return []frame{{kind: kSettings, settings: s}, {kind: kWindowUpdate, n: connWindow - 65535}}
}

// start runs the writer; the connection closes when it stops.
func (c *conn) start() {
	c.writerDone = make(chan struct{})
	go func() {
		err := c.w.run()
		close(c.writerDone)
		c.close(err)
	}()
}

// close ends the connection and every stream on it; the first error
// given is the one kept.
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if err == nil {
		err = errWriterClosed
	}
	c.err = err
	streams := c.streams
	c.streams = map[uint32]*stream{}
	close(c.done)
	c.mu.Unlock()
	c.w.close()
	c.nc.Close()
	if c.writerDone != nil && !c.server {
		// Closing nc ends any write in progress; once the writer has
		// stopped, its count of bytes sent is final, and tells the
		// requests that never left from those the peer may have seen.
		<-c.writerDone
	}
	for _, s := range streams {
		if !c.server && (s.hdrAt < 0 || s.hdrAt >= c.w.sent) {
			s.fail(fmt.Errorf("h2conn: connection closed before the request was sent: %w: %w", ErrNotSent, err))
		} else {
			s.fail(fmt.Errorf("h2conn: connection closed: %w", err))
		}
		c.role.forgot(s)
	}
}

// goAwayAndClose tells the peer why the connection ends, then closes it
// once the GOAWAY is out (or a second has passed).
func (c *conn) goAwayAndClose(code http2.ErrCode, err error) {
	c.mu.Lock()
	last := c.lastRemote
	c.goingAway = true
	c.mu.Unlock()
	if c.w.enqueue(frame{kind: kGoAway, n: last, code: code}) == nil {
		c.w.flushed(time.Second)
	}
	c.close(err)
}

// readLoop reads frames until the connection fails or closes.
func (c *conn) readLoop() error {
	for {
		f, err := c.fr.ReadFrame()
		c.framesRead.Add(1)
		if err == nil {
			f, err = c.blocks.take(f)
		}
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if c.count.Control() && c.calm(ReasonControlFlood) != nil {
					return errEnhanceYourCalm
				}
				c.resetStream(se.StreamID, se.Code)
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.goAwayAndClose(http2.ErrCode(ce), fmt.Errorf("h2conn: peer broke the protocol: %w", err))
				return err
			}
			c.close(err)
			return err
		}
		if f == nil {
			continue // a header block goes on in CONTINUATION frames
		}
		if !c.sawSettings {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				c.goAwayAndClose(http2.ErrCodeProtocol, errors.New("h2conn: first frame was not SETTINGS"))
				return errors.New("h2conn: first frame was not SETTINGS")
			}
			c.sawSettings = true
		}
		if err := c.handle(f); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.goAwayAndClose(http2.ErrCode(ce), fmt.Errorf("h2conn: peer broke the protocol: %w", err))
			} else if errors.Is(err, errEnhanceYourCalm) {
				if !c.calmDown() {
					continue
				}
			} else {
				c.close(err)
			}
			return err
		}
	}
}

func (c *conn) calm(reason string) error {
	c.abused(reason)
	if c.calmDown() {
		return errEnhanceYourCalm
	}
	return nil
}

// calmDown answers a peer that broke the frame limits with GOAWAY
// ENHANCE_YOUR_CALM and the connection's close: at once, or, with an
// abuseDrain, once the streams already open have ended or the drain has
// passed (the GOAWAY names the last stream taken, so the peer sends the
// later ones again elsewhere; RFC 9113, section 6.8). It reports whether
// the connection is closed and the read loop must stop.
func (c *conn) calmDown() bool {
	if c.calmed {
		return false
	}
	if c.abuseDrain <= 0 {
		c.goAwayAndClose(http2.ErrCodeEnhanceYourCalm, errEnhanceYourCalm)
		return true
	}
	c.calmed = true
	c.mu.Lock()
	c.goingAway = true
	last, idle := c.lastRemote, c.inUse == 0
	c.mu.Unlock()
	if c.w.enqueue(frame{kind: kGoAway, n: last, code: http2.ErrCodeEnhanceYourCalm}) != nil || idle {
		c.w.flushed(time.Second)
		c.close(errEnhanceYourCalm)
		return true
	}
	time.AfterFunc(c.abuseDrain, func() { c.close(errEnhanceYourCalm) })
	return false
}

// abused tells OnAbuse why the connection is about to close.
func (c *conn) abused(reason string) error {
	if c.calmed {
		// Draining after GOAWAY ENHANCE_YOUR_CALM: no new stream is
		// served, and what the peer still sends is handled as usual until
		// the drain ends.
		return nil
	}
	if c.onAbuse != nil {
		c.onAbuse(c.nc.RemoteAddr(), reason)
	}
	return errEnhanceYourCalm
}

// handle acts on one frame; an error ends the connection.
func (c *conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		if c.server && f.StreamID > c.opened {
			c.opened = f.StreamID
			c.count.Opened()
		}
		return c.role.headers(f)
	case *http2.DataFrame:
		if f.Length == 0 && !f.StreamEnded() && c.count.Control() {
			if err := c.abused(ReasonControlFlood); err != nil {
				return err
			}
		}
		return c.data(f)
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f.StreamID, f.Increment)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if c.count.Control() {
			if err := c.abused(ReasonControlFlood); err != nil {
				return err
			}
		}
		return c.peerSettings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		if c.count.Control() {
			if err := c.abused(ReasonControlFlood); err != nil {
				return err
			}
		}
		return c.w.enqueue(frame{kind: kPing, data: append([]byte(nil), f.Data[:]...)})
	case *http2.PriorityFrame:
		if c.count.Control() {
			if err := c.abused(ReasonControlFlood); err != nil {
				return err
			}
		}
	case *http2.RSTStreamFrame:
		// Only a client's resets cost a server work it cannot refuse
		// (its handlers); a server resets a client's streams for its own
		// reasons (an answer sent before the body was read, a refusal),
		// and a client counting them would cut itself off under load.
		if c.server && c.count.Reset() {
			if err := c.abused(ReasonRapidReset); err != nil {
				return err
			}
		}
		c.mu.Lock()
		s := c.streams[f.StreamID]
		c.mu.Unlock()
		if s != nil {
			err := error(ResetError{f.ErrCode})
			if f.ErrCode == http2.ErrCodeRefusedStream {
				err = ErrRefused
			}
			c.endStream(s, err)
		}
	case *http2.GoAwayFrame:
		c.role.peerGoAway(f)
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil
}

// peerSettings applies the peer's SETTINGS and acknowledges them.
func (c *conn) peerSettings(f *http2.SettingsFrame) error {
	var forWriter []http2.Setting
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			c.mu.Lock()
			delta := int64(s.Val) - c.initSend
			c.initSend = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += delta
				st.wakeSend()
			}
			c.mu.Unlock()
		case http2.SettingMaxConcurrentStreams:
			c.mu.Lock()
			c.peerMax = s.Val
			c.mu.Unlock()
		case http2.SettingMaxFrameSize, http2.SettingHeaderTableSize:
			forWriter = append(forWriter, s)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = c.w.enqueue(frame{kind: kSettingsAck, settings: forWriter})
	closeOnce(c.settingsc)
	return err
}

// windowUpdate adds to a send window.
func (c *conn) windowUpdate(id, inc uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == 0 {
		c.sendWin += int64(inc)
		if c.sendWin > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		for _, s := range c.streams {
			s.wakeSend()
		}
		return nil
	}
	s := c.streams[id]
	if s == nil {
		return nil
	}
	s.sendWin += int64(inc)
	if s.sendWin > 1<<31-1 {
		c.mu.Unlock()
		c.resetStream(id, http2.ErrCodeFlowControl)
		c.mu.Lock()
		return nil
	}
	s.wakeSend()
	return nil
}

// data takes a DATA frame into its stream's buffer.
func (c *conn) data(f *http2.DataFrame) error {
	n := int(f.Length)
	p := f.Data()
	c.mu.Lock()
	if int64(n) > c.recvWin {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWin -= int64(n)
	s := c.streams[f.StreamID]
	if s == nil || s.remoteEnd {
		// A stream already reset or ended: its bytes go back at once.
		c.owed += n
		c.mu.Unlock()
		if s != nil {
			c.resetStream(f.StreamID, http2.ErrCodeStreamClosed)
		}
		c.credit()
		return nil
	}
	if int64(n) > s.recvWin {
		c.mu.Unlock()
		c.resetStream(f.StreamID, http2.ErrCodeFlowControl)
		return nil
	}
	s.recvWin -= int64(n)
	s.rbuf.write(p)
	c.buffered += len(p)
	pad := n - len(p)
	s.unacked += pad
	if c.buffered > c.lim.ConnBuffer {
		c.owed += pad
		c.withheld += len(p)
	} else {
		c.owed += n
	}
	if f.StreamEnded() {
		s.remoteEnd = true
		s.rerr = io.EOF
	}
	done := s.remoteEnd && s.localEnd
	s.wakeRecv()
	c.mu.Unlock()
	if done {
		c.forget(s)
	}
	c.credit()
	return nil
}

// credit returns what is owed on the connection window once it is worth
// a frame (a quarter of the window).
func (c *conn) credit() {
	c.mu.Lock()
	n := c.owed
	if n < connWindow/4 {
		c.mu.Unlock()
		return
	}
	c.owed = 0
	c.recvWin += int64(n)
	c.mu.Unlock()
	c.w.enqueue(frame{kind: kWindowUpdate, n: uint32(n)})
}

// resetStream sends RST_STREAM and ends the stream here.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	c.w.enqueue(frame{kind: kRST, stream: id, code: code})
	c.mu.Lock()
	s := c.streams[id]
	c.mu.Unlock()
	if s != nil {
		c.endStream(s, ResetError{code})
	}
}

// endStream ends s with err (a reset, either way): its waiters wake and
// it leaves the connection.
func (c *conn) endStream(s *stream, err error) {
	s.fail(err)
	c.forget(s)
}

// forget removes a stream both sides are done with (or that was reset)
// and releases what it still buffered.
func (c *conn) forget(s *stream) {
	c.mu.Lock()
	if c.streams[s.id] != s {
		c.mu.Unlock()
		return
	}
	delete(c.streams, s.id)
	c.release(s.rbuf.len())
	s.released = true
	c.mu.Unlock()
	c.role.forgot(s)
	c.credit()
}

// release counts n buffered bytes as consumed on the connection; mu held.
func (c *conn) release(n int) {
	c.buffered -= n
	if c.withheld > 0 {
		k := min(n, c.withheld)
		c.withheld -= k
		c.owed += k
	}
}
