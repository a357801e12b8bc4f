package proxy

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h2abuse"
	"github.com/sigil-mesh/sigil/proxy/h2conn"
)

// HTTP/2 frame types and flags the guard looks at (RFC 9113, section 6).
const (
	h2FrameData         = 0x0
	h2FrameHeaders      = 0x1
	h2FramePriority     = 0x2
	h2FrameRSTStream    = 0x3
	h2FrameSettings     = 0x4
	h2FramePing         = 0x6
	h2FrameGoAway       = 0x7
	h2FrameWindowUpdate = 0x8

	h2FlagAck       = 0x1 // SETTINGS, PING
	h2FlagEndStream = 0x1 // DATA

	h2EnhanceYourCalm = 0xb
	h2FrameHeaderLen  = 9
)

// h2ClientPreface opens every HTTP/2 connection from a client.
const h2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Reasons an HTTP/2 connection is closed for abuse (the reason label of
// sigil_http2_connections_closed_total).
const (
	abuseRapidReset   = "rapid_reset"
	abuseControlFlood = "control_frame_flood"
)

// errEnhanceYourCalm ends the reads of a connection closed for abuse.
var errEnhanceYourCalm = errors.New("proxy: http2 connection closed for abuse (ENHANCE_YOUR_CALM)")

// h2Limits bound what one HTTP/2 connection from a client may send per
// window: RST_STREAM frames (CVE-2023-44487, rapid reset), and control
// frames that cost the server work but carry no request (SETTINGS and PING
// without ACK, PRIORITY, WINDOW_UPDATE of zero, empty DATA without
// END_STREAM; Envoy and nghttp2 count the same kinds) beyond those the
// connection earned by progress (h2abuse: grpc-go's ping rule, so BDP
// and keepalive pings are never counted against a working client).
type h2Limits struct {
	maxResets  int
	maxControl int
	window     time.Duration
}

// frameGuard counts the HTTP/2 frames a client sends by reading the 9-byte
// frame headers as the bytes pass (it never buffers or changes them), and
// closes a connection that goes over its limits with GOAWAY
// ENHANCE_YOUR_CALM, as Envoy does. Go's HTTP/2 server bounds concurrent
// streams but neither a connection's resets nor its control frames.
type frameGuard struct {
	net.Conn
	count   *h2abuse.Counter
	onAbuse func(reason string)

	// Read side: touched by the reading goroutine only.
	skip        int // preface bytes still to pass
	hdr         [h2FrameHeaderLen]byte
	hdrN        int
	typ, flags  byte
	payloadLeft int
	wu          [4]byte // a WINDOW_UPDATE's increment
	wuN         int
	lastStream  uint32

	calm atomic.Bool // closed for abuse

	// Write side, to send GOAWAY between two frames and never inside one.
	wmu      sync.Mutex
	whdr     [h2FrameHeaderLen]byte
	whdrN    int
	wLeft    int
	goneAway bool
	gone     chan struct{} // closed when goneAway is set
}

// newFrameGuard watches c, an HTTP/2 connection from a client whose
// preface has not been read yet.
func newFrameGuard(c net.Conn, lim h2Limits, onAbuse func(reason string)) *frameGuard {
	return &frameGuard{Conn: c, count: h2abuse.NewCounter(lim.maxResets, lim.maxControl, lim.window, nil), onAbuse: onAbuse, skip: len(h2ClientPreface), gone: make(chan struct{})}
}

func (g *frameGuard) Read(p []byte) (int, error) {
	if g.calm.Load() {
		return 0, errEnhanceYourCalm
	}
	n, err := g.Conn.Read(p)
	if reason := g.scan(p[:n]); reason != "" {
		g.enhanceYourCalm(reason)
		// The server closes the connection when its read fails: first
		// let the GOAWAY out.
		select {
		case <-g.gone:
		case <-time.After(time.Second):
		}
		return 0, errEnhanceYourCalm
	}
	return n, err
}

// scan follows the frames in b and reports the limit they break, if any.
func (g *frameGuard) scan(b []byte) string {
	for len(b) > 0 {
		switch {
		case g.skip > 0:
			k := min(g.skip, len(b))
			g.skip -= k
			b = b[k:]
		case g.payloadLeft > 0:
			k := min(g.payloadLeft, len(b))
			if g.typ == h2FrameWindowUpdate && g.wuN < len(g.wu) {
				g.wuN += copy(g.wu[g.wuN:], b[:k])
				if g.wuN == len(g.wu) && binary.BigEndian.Uint32(g.wu[:])&0x7fffffff == 0 && g.count.Control() {
					return abuseControlFlood
				}
			}
			g.payloadLeft -= k
			b = b[k:]
		default:
			k := copy(g.hdr[g.hdrN:], b)
			g.hdrN += k
			b = b[k:]
			if g.hdrN < h2FrameHeaderLen {
				continue
			}
			g.hdrN = 0
			if reason := g.frame(); reason != "" {
				return reason
			}
		}
	}
	return ""
}

// frame judges a frame whose header is in g.hdr.
func (g *frameGuard) frame() string {
	length := int(g.hdr[0])<<16 | int(g.hdr[1])<<8 | int(g.hdr[2])
	g.typ, g.flags = g.hdr[3], g.hdr[4]
	stream := binary.BigEndian.Uint32(g.hdr[5:]) & 0x7fffffff
	g.payloadLeft, g.wuN = length, 0
	switch g.typ {
	case h2FrameHeaders:
		if stream > g.lastStream {
			g.lastStream = stream
			g.count.Opened()
		}
	case h2FrameRSTStream:
		if g.count.Reset() {
			return abuseRapidReset
		}
	case h2FrameSettings, h2FramePing:
		if g.flags&h2FlagAck == 0 && g.count.Control() {
			return abuseControlFlood
		}
	case h2FramePriority:
		if g.count.Control() {
			return abuseControlFlood
		}
	case h2FrameData:
		if length == 0 && g.flags&h2FlagEndStream == 0 && g.count.Control() {
			return abuseControlFlood
		}
	}
	return ""
}

// enhanceYourCalm marks the connection closed for abuse: GOAWAY
// ENHANCE_YOUR_CALM goes out as soon as the server is between two frames
// (now, or when its write in progress ends that frame), and the
// connection closes; a writer that never gets there is cut after 2 s.
func (g *frameGuard) enhanceYourCalm(reason string) {
	if !g.calm.CompareAndSwap(false, true) {
		return
	}
	g.onAbuse(reason)
	time.AfterFunc(2*time.Second, func() { g.Conn.Close() })
	if g.wmu.TryLock() {
		g.goAwayLocked()
		g.wmu.Unlock()
	}
}

// goAwayLocked sends GOAWAY and closes, if the server is between two
// frames; wmu held.
func (g *frameGuard) goAwayLocked() {
	if g.goneAway || g.whdrN != 0 || g.wLeft != 0 {
		return
	}
	g.goneAway = true
	close(g.gone)
	var f [h2FrameHeaderLen + 8]byte
	f[2] = 8
	f[3] = h2FrameGoAway
	binary.BigEndian.PutUint32(f[9:], g.lastStream)
	binary.BigEndian.PutUint32(f[13:], h2EnhanceYourCalm)
	g.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	g.Conn.Write(f[:])
	go g.lingerClose()
}

// lingerClose half-closes, reads what the client still sends for up to a
// second, then closes: closing a socket with unread input sends a reset,
// which can destroy the GOAWAY before the client reads it.
func (g *frameGuard) lingerClose() {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	g.Conn.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, g.Conn)
	g.Conn.Close()
}

func (g *frameGuard) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if g.goneAway {
		return 0, errEnhanceYourCalm
	}
	calm := g.calm.Load()
	if calm {
		// Finish the frame in progress, nothing more.
		p = p[:g.frameEnd(p)]
	}
	n, err := g.Conn.Write(p)
	g.follow(p[:n])
	if g.calm.Load() {
		if err != nil && !g.goneAway {
			g.goneAway = true
			close(g.gone)
			g.Conn.Close()
		}
		g.goAwayLocked()
	}
	if calm {
		return n, errEnhanceYourCalm
	}
	return n, err
}

// Close sends the pending GOAWAY, if it can, on the way out; a connection
// whose GOAWAY went out is closed by lingerClose.
func (g *frameGuard) Close() error {
	if g.calm.Load() && g.wmu.TryLock() {
		g.goAwayLocked()
		gone := g.goneAway
		g.wmu.Unlock()
		if gone {
			return nil
		}
	}
	return g.Conn.Close()
}

// follow tracks the frame boundaries of what the server wrote, and
// counts its HEADERS and DATA frames as the connection's progress.
func (g *frameGuard) follow(b []byte) {
	for len(b) > 0 {
		if g.wLeft > 0 {
			k := min(g.wLeft, len(b))
			g.wLeft -= k
			b = b[k:]
			continue
		}
		k := copy(g.whdr[g.whdrN:], b)
		g.whdrN += k
		b = b[k:]
		if g.whdrN == h2FrameHeaderLen {
			g.whdrN = 0
			g.wLeft = int(g.whdr[0])<<16 | int(g.whdr[1])<<8 | int(g.whdr[2])
			if t := g.whdr[3]; t == h2FrameHeaders || t == h2FrameData {
				g.count.Progress()
			}
		}
	}
}

// frameEnd is how many bytes of p end the frame being written (0 at a
// boundary, len(p) if p does not reach the end).
func (g *frameGuard) frameEnd(p []byte) int {
	if g.whdrN == 0 && g.wLeft == 0 {
		return 0
	}
	hdr, hdrN, left, i := g.whdr, g.whdrN, g.wLeft, 0
	if hdrN > 0 {
		k := copy(hdr[hdrN:], p)
		hdrN += k
		i += k
		if hdrN < h2FrameHeaderLen {
			return len(p)
		}
		left = int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
	}
	return min(i+left, len(p))
}

// h2connLimits are lim for an h2conn.Server (where 0 takes a default and
// a negative count is no limit), with 250 concurrent streams as the
// HTTP/2 servers here allow.
func h2connLimits(lim h2Limits) h2conn.Limits {
	noLimit := func(n int) int {
		if n <= 0 {
			return -1
		}
		return n
	}
	return h2conn.Limits{MaxStreams: 250, MaxResets: noLimit(lim.maxResets), MaxControlFrames: noLimit(lim.maxControl), Window: lim.window}
}

// h2Server is the HTTP/2 server of one listener ("inbound": other
// sidecars; "outbound": the app's h2c) serving h: the proxy's HTTP/2
// limits, connections idle for 2 minutes closed, and every connection
// closed for abuse counted in sigil_http2_connections_closed_total and
// logged.
func (p *Proxy) h2Server(h http.Handler, listener string) *h2conn.Server {
	return &h2conn.Server{
		Handler:     p.bodyRate.handler(h),
		IdleTimeout: 2 * time.Minute,
		Limits:      h2connLimits(p.h2Limits),
		OnAbuse: func(peer net.Addr, reason string) {
			p.h2Closed.WithLabelValues(listener, reason).Inc()
			p.log.Warn("http2 connection closed for abuse (GOAWAY ENHANCE_YOUR_CALM)", "listener", listener, "peer", peer.String(), "reason", reason)
		},
		Log: p.log,
	}
}
