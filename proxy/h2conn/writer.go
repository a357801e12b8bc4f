package h2conn

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h2abuse"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// kind is what a queued frame is.
type kind uint8

const (
	kHeaders kind = iota
	kData
	kWindowUpdate
	kSettings
	kSettingsAck
	kPing // an acknowledgement
	kPingReq
	kRST
	kGoAway
	kMark // no frame: mark is closed once what was queued before it is flushed
)

// frame is one frame waiting for the writer. HEADERS carry their fields,
// not a header block: HPACK's dynamic table requires blocks to be encoded
// in the order they go on the wire, which only the writer knows.
type frame struct {
	kind     kind
	stream   uint32
	end      bool                // END_STREAM (HEADERS, DATA)
	fields   []hpack.HeaderField // HEADERS
	data     []byte              // DATA (owned by the frame), PING
	n        uint32              // WINDOW_UPDATE increment, GOAWAY last stream
	code     http2.ErrCode       // RST_STREAM, GOAWAY
	settings []http2.Setting     // SETTINGS; with SETTINGS ack: the peer's, to apply first
	pool     bool                // data came from dataPool
	mark     chan struct{}
	// opens is the client stream a HEADERS frame opens: the writer notes
	// where on the wire its first byte goes (stream.hdrAt).
	opens *stream
	// owner is the stream whose sender lent data without a copy (DATA
	// over dataChunk bytes): the writer sends it a frame per turn and
	// tells the sender when it is done with the bytes (stream.written).
	owner *stream
}

// writeBufSize is the writer's buffer: the frames of many streams
// gathered for one write.
const writeBufSize = 32 << 10

// writer is the connection's only writer: a goroutine that encodes the
// queued frames into one buffer and writes it when the queue is empty, so
// the frames of all streams queued meanwhile leave in one system call.
type writer struct {
	mu     sync.Mutex
	queue  []frame
	spare  []frame
	wake   chan struct{} // one token: the queue has frames
	closed bool

	// Writer goroutine only.
	nc       net.Conn
	bw       *bufio.Writer
	fr       *http2.Framer
	enc      *hpack.Encoder
	hbuf     bytes.Buffer
	maxFrame uint32 // the peer's SETTINGS_MAX_FRAME_SIZE
	// sent counts the bytes the connection accepted (its Write calls'
	// counts, partial ones included): a frame starting at or past it
	// never left. Read by others only once the writer has stopped.
	sent int64
	// count, if set, is told of each HEADERS and DATA frame written: what
	// earns the peer a control frame.
	count *h2abuse.Counter
	// lent are the uncopied DATA frames not yet written whole, in the
	// order they came: each gets one frame of at most turnSize bytes per
	// turn, between the other frames queued meanwhile.
	lent []frame
}

// turnSize is the most of one stream's uncopied body written before the
// writer turns to the frames of others (and the next lent body): a
// large body then holds the other streams back by one such frame, not
// by the whole body. Go's HTTP/2 and nghttp2 (Envoy) also schedule
// stream by stream a frame at a time; a frame larger than the 16 KiB
// they use saves read-loop work per byte at the peer.
const turnSize = 64 << 10

var errWriterClosed = errors.New("h2conn: connection closed")

func newWriter(nc net.Conn) *writer {
	w := &writer{nc: nc, wake: make(chan struct{}, 1), maxFrame: 16384}
	w.bw = bufio.NewWriterSize(sentCounter{nc, &w.sent}, writeBufSize)
	w.fr = http2.NewFramer(w.bw, nil)
	w.enc = hpack.NewEncoder(&w.hbuf)
	return w
}

// enqueue queues frames, in order, and wakes the writer.
func (w *writer) enqueue(fs ...frame) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return errWriterClosed
	}
	w.queue = append(w.queue, fs...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// flushed waits until what is queued now has been written, or for at
// most d.
func (w *writer) flushed(d time.Duration) {
	m := make(chan struct{})
	if w.enqueue(frame{kind: kMark, mark: m}) != nil {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-m:
	case <-t.C:
	}
}

// close stops the writer; frames still queued are dropped.
func (w *writer) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes until close or a write error, which it returns.
func (w *writer) run() error {
	var marks []chan struct{}
	for range w.wake {
		yielded := false
		for {
			w.mu.Lock()
			if w.closed {
				w.mu.Unlock()
				return errWriterClosed
			}
			batch := w.queue
			if len(batch) == 0 {
				w.mu.Unlock()
				if len(w.lent) > 0 {
					if err := w.turn(); err != nil {
						return err
					}
					continue
				}
				if !yielded && w.bw.Buffered() < writeBufSize/2 {
					// Let the streams that are running add their frames
					// to this write, as grpc-go's loopy writer does.
					yielded = true
					runtime.Gosched()
					continue
				}
				break
			}
			// Two arrays take turns: one filled by enqueue, one written.
			w.queue, w.spare = w.spare[:0], nil
			w.mu.Unlock()
			for i := range batch {
				f := &batch[i]
				switch {
				case f.owner != nil:
					w.lent = append(w.lent, *f)
				case f.kind == kRST:
					w.drop(f.stream)
					fallthrough
				default:
					if err := w.encode(f); err != nil {
						return err
					}
				}
				if f.pool {
					putData(f.data)
				}
				if f.mark != nil {
					marks = append(marks, f.mark)
				}
				batch[i] = frame{}
			}
			w.mu.Lock()
			w.spare = batch[:0]
			w.mu.Unlock()
			if len(w.lent) > 0 {
				if err := w.turn(); err != nil {
					return err
				}
			}
		}
		if err := w.bw.Flush(); err != nil {
			return err
		}
		for _, m := range marks {
			close(m)
		}
		marks = marks[:0]
	}
	return errWriterClosed
}

// turn writes one frame of each lent body, and gives back those written
// whole or whose stream has ended (reset, failed).
func (w *writer) turn() error {
	keep := w.lent[:0]
	for _, f := range w.lent {
		if f.owner.ended.Load() {
			w.giveBack(&f, len(f.data))
			continue
		}
		n := min(len(f.data), int(w.maxFrame), turnSize)
		last := n == len(f.data)
		if w.count != nil {
			w.count.Progress()
		}
		if err := w.writeData(f.stream, f.data[:n], f.end && last); err != nil {
			return err
		}
		if last {
			w.giveBack(&f, 0)
			continue
		}
		f.data = f.data[n:]
		keep = append(keep, f)
	}
	clear(w.lent[len(keep):])
	w.lent = keep
	return nil
}

// drop gives back, unwritten, what is lent for stream id: the stream is
// being reset, and no DATA may follow its RST_STREAM.
func (w *writer) drop(id uint32) {
	keep := w.lent[:0]
	for _, f := range w.lent {
		if f.stream == id {
			w.giveBack(&f, len(f.data))
			continue
		}
		keep = append(keep, f)
	}
	clear(w.lent[len(keep):])
	w.lent = keep
}

// giveBack tells the sender of a lent body that the writer is done with
// it, unwritten of its bytes never sent.
func (w *writer) giveBack(f *frame, unwritten int) {
	f.owner.unwritten = int64(unwritten)
	f.owner.wrote <- struct{}{}
}

// encode writes f into the buffer.
func (w *writer) encode(f *frame) error {
	switch f.kind {
	case kHeaders, kData:
		if w.count != nil {
			w.count.Progress()
		}
	}
	switch f.kind {
	case kHeaders:
		return w.headers(f)
	case kData:
		return w.data(f.stream, f.data, f.end)
	case kWindowUpdate:
		return w.fr.WriteWindowUpdate(f.stream, f.n)
	case kSettings:
		return w.fr.WriteSettings(f.settings...)
	case kSettingsAck:
		for _, s := range f.settings {
			switch s.ID {
			case http2.SettingMaxFrameSize:
				w.maxFrame = s.Val
			case http2.SettingHeaderTableSize:
				w.enc.SetMaxDynamicTableSizeLimit(s.Val)
			}
		}
		return w.fr.WriteSettingsAck()
	case kPing:
		var d [8]byte
		copy(d[:], f.data)
		return w.fr.WritePing(true, d)
	case kPingReq:
		return w.fr.WritePing(false, [8]byte{'s', 'i', 'g', 'i', 'l'})
	case kRST:
		return w.fr.WriteRSTStream(f.stream, f.code)
	case kGoAway:
		return w.fr.WriteGoAway(f.n, f.code, nil)
	}
	return nil
}

// sentCounter counts what its connection accepted.
type sentCounter struct {
	nc net.Conn
	n  *int64
}

func (c sentCounter) Write(p []byte) (int, error) {
	n, err := c.nc.Write(p)
	*c.n += int64(n)
	return n, err
}

// headers encodes a header block and writes it as HEADERS and as many
// CONTINUATION frames as the peer's frame size requires.
func (w *writer) headers(f *frame) error {
	if f.opens != nil {
		f.opens.hdrAt = w.sent + int64(w.bw.Buffered())
	}
	w.hbuf.Reset()
	for _, hf := range f.fields {
		if err := w.enc.WriteField(hf); err != nil {
			return err
		}
	}
	block := w.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		n := min(len(block), int(w.maxFrame))
		frag := block[:n]
		block = block[n:]
		var err error
		if first {
			err = w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.stream, BlockFragment: frag, EndStream: f.end, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = w.fr.WriteContinuation(f.stream, len(block) == 0, frag)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// data writes p as DATA frames of at most the peer's frame size.
func (w *writer) data(stream uint32, p []byte, end bool) error {
	for {
		n := min(len(p), int(w.maxFrame))
		last := n == len(p)
		if err := w.writeData(stream, p[:n], end && last); err != nil {
			return err
		}
		p = p[n:]
		if last {
			return nil
		}
	}
}

// writeData writes one DATA frame: its header into the buffer, then p,
// which the buffer passes to the connection without a copy when it does
// not fit (the framer would first copy it into a frame of its own).
func (w *writer) writeData(stream uint32, p []byte, end bool) error {
	var h [9]byte
	h[0], h[1], h[2] = byte(len(p)>>16), byte(len(p)>>8), byte(len(p))
	h[3] = byte(http2.FrameData)
	if end {
		h[4] = byte(http2.FlagDataEndStream)
	}
	binary.BigEndian.PutUint32(h[5:], stream&(1<<31-1))
	if _, err := w.bw.Write(h[:]); err != nil {
		return err
	}
	_, err := w.bw.Write(p)
	return err
}

// dataPool holds the buffers DATA frames are copied into on their way to
// the writer. It holds arrays, whose pointer a slice of a full one gives
// back without allocating (a *[]byte would cost one per Put).
var dataPool = sync.Pool{New: func() any { return new([dataChunk]byte) }}

// dataChunk is the most one DATA frame queued at a time carries.
const dataChunk = 16 << 10

// getData is a pooled buffer holding a copy of p (at most dataChunk
// bytes).
func getData(p []byte) []byte {
	return append(dataPool.Get().(*[dataChunk]byte)[:0], p...)
}

// putData returns a buffer from getData to the pool; others are left to
// the collector.
func putData(b []byte) {
	if cap(b) == dataChunk {
		dataPool.Put((*[dataChunk]byte)(b[:dataChunk]))
	}
}
