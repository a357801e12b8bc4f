package h2conn

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// peer is a hand-driven HTTP/2 client: it sends whatever frames a test
// writes, valid or not.
type peer struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialPeer(t *testing.T, addr string) *peer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	p := &peer{t: t, c: c, fr: http2.NewFramer(c, c)}
	p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	p.enc = hpack.NewEncoder(&p.buf)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	p.fr.WriteSettings()
	return p
}

// block is a header block for GET /path, plus extra fields.
func (p *peer) block(path string, extra ...hpack.HeaderField) []byte {
	p.buf.Reset()
	for _, f := range append([]hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "x"}, {Name: ":path", Value: path}}, extra...) {
		p.enc.WriteField(f)
	}
	return append([]byte(nil), p.buf.Bytes()...)
}

func (p *peer) open(id uint32, path string, extra ...hpack.HeaderField) {
	p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.block(path, extra...), EndStream: true, EndHeaders: true})
}

// until reads frames until one satisfies match, and fails the test if the
// connection ends first.
func (p *peer) until(what string, match func(http2.Frame) bool) {
	p.t.Helper()
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			p.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return
		}
	}
}

func goAway(code http2.ErrCode) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		g, ok := f.(*http2.GoAwayFrame)
		return ok && g.ErrCode == code
	}
}

func rst(id uint32, code http2.ErrCode) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == id && r.ErrCode == code
	}
}

// TestHostilePeerLimits: each way a client can make a server work without
// sending requests ends with GOAWAY ENHANCE_YOUR_CALM (Envoy's rule).
func TestHostilePeerLimits(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("block") {
			<-block
		}
	})
	lim := Limits{MaxStreams: 2, MaxResets: 10, MaxControlFrames: 10, MaxHeaderListSize: 4096, Window: time.Hour}
	cases := []struct {
		name   string
		run    func(p *peer)
		reason string // told to OnAbuse
	}{
		{"rapid reset", func(p *peer) {
			for id := uint32(1); id < 60; id += 2 {
				p.open(id, "/")
				p.fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
			p.until("GOAWAY ENHANCE_YOUR_CALM", goAway(http2.ErrCodeEnhanceYourCalm))
		}, ReasonRapidReset},
		{"ping flood", func(p *peer) {
			for range 20 {
				p.fr.WritePing(false, [8]byte{})
			}
			p.until("GOAWAY ENHANCE_YOUR_CALM", goAway(http2.ErrCodeEnhanceYourCalm))
		}, ReasonControlFlood},
		{"settings flood", func(p *peer) {
			for range 20 {
				p.fr.WriteSettings()
			}
			p.until("GOAWAY ENHANCE_YOUR_CALM", goAway(http2.ErrCodeEnhanceYourCalm))
		}, ReasonControlFlood},
		{"empty data flood", func(p *peer) {
			p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: p.block("/?block"), EndHeaders: true})
			for range 20 {
				p.fr.WriteData(1, false, nil)
			}
			p.until("GOAWAY ENHANCE_YOUR_CALM", goAway(http2.ErrCodeEnhanceYourCalm))
		}, ReasonControlFlood},
		{"continuation flood", func(p *peer) {
			b := p.block("/", hpack.HeaderField{Name: "x-junk", Value: strings.Repeat("j", 200000)})
			p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:16000], EndStream: true})
			for b = b[16000:]; len(b) > 16000; b = b[16000:] {
				p.fr.WriteContinuation(1, false, b[:16000])
			}
			p.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
		}, ""},
		{"header list too large", func(p *peer) {
			var big []hpack.HeaderField
			for i := range 10 {
				big = append(big, hpack.HeaderField{Name: "x-big-" + string(rune('a'+i)), Value: strings.Repeat("v", 500)})
			}
			p.open(1, "/", big...)
			p.until("431", func(f http2.Frame) bool {
				h, ok := f.(*http2.MetaHeadersFrame)
				return ok && h.StreamID == 1 && h.PseudoValue("status") == "431"
			})
		}, ""},
		{"streams over the limit refused", func(p *peer) {
			p.open(1, "/?block")
			p.open(3, "/?block")
			p.open(5, "/")
			p.until("RST_STREAM REFUSED_STREAM", rst(5, http2.ErrCodeRefusedStream))
		}, ""},
		{"a reset keeps the slot until the handler returns", func(p *peer) {
			p.open(1, "/?block")
			p.open(3, "/?block")
			p.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			p.fr.WriteRSTStream(3, http2.ErrCodeCancel)
			p.open(5, "/")
			p.until("RST_STREAM REFUSED_STREAM", rst(5, http2.ErrCodeRefusedStream))
		}, ""},
		{"first frame not SETTINGS", func(p *peer) {
			// dialPeer sent SETTINGS; a fresh connection sends PING first.
			c, err := net.Dial("tcp", p.c.RemoteAddr().String())
			if err != nil {
				p.t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write([]byte(http2.ClientPreface))
			q := &peer{t: p.t, c: c, fr: http2.NewFramer(c, c)}
			q.fr.WritePing(false, [8]byte{})
			q.until("GOAWAY PROTOCOL_ERROR", goAway(http2.ErrCodeProtocol))
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			abuse := make(chan string, 1)
			addr := serve(t, &Server{Handler: handler, Limits: lim, OnAbuse: func(_ net.Addr, r string) { abuse <- r }}, nil)
			tc.run(dialPeer(t, addr))
			if tc.reason != "" {
				if r := <-abuse; r != tc.reason {
					t.Fatalf("OnAbuse told %q, want %q", r, tc.reason)
				}
			}
		})
	}
}

// TestClientDoesNotCountServerResets: a server resets a client's streams
// for its own reasons (an answer sent before the body was read, a
// refusal); however often it does, the client keeps its connection.
func TestClientDoesNotCountServerResets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acked := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acked <- err
			return
		}
		defer c.Close()
		pre := make([]byte, len(http2.ClientPreface))
		io.ReadFull(c, pre)
		fr := http2.NewFramer(c, c)
		fr.WriteSettings()
		for id := uint32(1); id < 40; id += 2 {
			fr.WriteRSTStream(id, http2.ErrCodeNo)
		}
		// The PING's answer comes after the resets were read.
		fr.WritePing(false, [8]byte{7})
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				acked <- err
				return
			}
			if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
				acked <- nil
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				acked <- fmt.Errorf("client sent GOAWAY %v", g.ErrCode)
				return
			}
		}
	}()
	cl := client(t, ln.Addr().String(), nil, Limits{MaxResets: 5, Window: time.Hour})
	if _, err := cl.dial(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
}

// TestEarnedControlFramesSpared: control frames that follow progress (a
// request sent, an answer's HEADERS and DATA received) are not counted,
// so a client that pings and prioritizes around each request, as grpc-go
// (BDP estimation) and browsers do, is served however many it sends,
// while the same frames with no request are a flood (TestHostilePeerLimits).
func TestEarnedControlFramesSpared(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	lim := Limits{MaxResets: 10, MaxControlFrames: 10, Window: time.Hour}
	abuse := make(chan string, 1)
	addr := serve(t, &Server{Handler: handler, Limits: lim, OnAbuse: func(_ net.Addr, r string) { abuse <- r }}, nil)
	p := dialPeer(t, addr)
	for i := range 100 {
		id := uint32(2*i + 1)
		p.open(id, "/")
		p.fr.WritePriority(id, http2.PriorityParam{Weight: 15})
		p.fr.WritePing(false, [8]byte{byte(i)})
		p.until(fmt.Sprintf("the end of stream %d", id), func(f http2.Frame) bool {
			if g, ok := f.(*http2.GoAwayFrame); ok {
				t.Fatalf("GOAWAY %v after %d requests", g.ErrCode, i)
			}
			return f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream)
		})
	}
	select {
	case r := <-abuse:
		t.Fatalf("OnAbuse told %q", r)
	default:
	}
}

// A server with an AbuseDrain that cuts a rapid-resetting peer lets the
// streams it already took finish (a sidecar's connection carries other
// apps' requests beside the abuser's), refuses new ones, OnAbuse is told
// once, and the connection closes once they are done.
func TestAbuseDrainSparesOpenStreams(t *testing.T) {
	release := make(chan struct{})
	var abuses atomic.Int32
	srv := &Server{Limits: Limits{MaxResets: 10, Window: time.Hour}, AbuseDrain: 5 * time.Second,
		OnAbuse: func(net.Addr, string) { abuses.Add(1) },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/held" {
				<-release
			}
			io.WriteString(w, "done")
		})}
	p := dialPeer(t, serve(t, srv, nil))
	p.open(1, "/held")
	for id := uint32(3); id < 200; id += 2 {
		p.open(id, "/reset")
		p.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	p.until("GOAWAY ENHANCE_YOUR_CALM", goAway(http2.ErrCodeEnhanceYourCalm))
	p.open(1001, "/after")
	p.until("RST_STREAM REFUSED_STREAM after the GOAWAY", rst(1001, http2.ErrCodeRefusedStream))
	close(release)
	p.until("the held stream's answer", func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		return ok && d.StreamID == 1 && string(d.Data()) == "done"
	})
	for {
		if _, err := p.fr.ReadFrame(); err != nil {
			break // closed once the held stream ended
		}
	}
	if n := abuses.Load(); n != 1 {
		t.Errorf("OnAbuse told %d times, want 1", n)
	}
}
