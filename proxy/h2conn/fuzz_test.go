package h2conn

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// frames builds a client's byte stream after its preface and SETTINGS.
func frames(build func(fr *http2.Framer, enc func(fs ...hpack.HeaderField) []byte)) []byte {
	var out, hb bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	e := hpack.NewEncoder(&hb)
	build(fr, func(fs ...hpack.HeaderField) []byte {
		hb.Reset()
		for _, f := range fs {
			e.WriteField(f)
		}
		return append([]byte(nil), hb.Bytes()...)
	})
	return out.Bytes()
}

var getFields = []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"},
	{Name: ":authority", Value: "x"}, {Name: ":path", Value: "/a?b"}, {Name: "trailer", Value: "x-t"}}

// FuzzServerFrames feeds a Server arbitrary frames after a valid preface:
// whatever they are, it must neither panic nor hang.
func FuzzServerFrames(f *testing.F) {
	f.Add(frames(func(fr *http2.Framer, enc func(...hpack.HeaderField) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(getFields...), EndStream: true, EndHeaders: true})
	}))
	f.Add(frames(func(fr *http2.Framer, enc func(...hpack.HeaderField) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(getFields...), EndHeaders: true})
		fr.WriteData(1, false, []byte("hello"))
		fr.WriteWindowUpdate(0, 1000)
		fr.WriteWindowUpdate(1, 1000)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(hpack.HeaderField{Name: "x-t", Value: "1"}), EndStream: true, EndHeaders: true})
	}))
	f.Add(frames(func(fr *http2.Framer, enc func(...hpack.HeaderField) []byte) {
		b := enc(getFields...)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: b[:3]})
		fr.WriteContinuation(3, true, b[3:])
		fr.WriteRSTStream(3, http2.ErrCodeCancel)
		fr.WritePing(false, [8]byte{1})
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14})
		fr.WritePriority(5, http2.PriorityParam{StreamDep: 3})
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	}))
	f.Add(frames(func(fr *http2.Framer, enc func(...hpack.HeaderField) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(append(getFields, hpack.HeaderField{Name: "expect", Value: "100-continue"})...), EndHeaders: true})
		fr.WriteData(1, true, bytes.Repeat([]byte("d"), 70000%16384))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: enc(getFields...), EndHeaders: true})
	}))
	f.Add(frames(func(fr *http2.Framer, enc func(...hpack.HeaderField) []byte) {
		// Malformed blocks (blockReader's checks), then one too large.
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(append(getFields, hpack.HeaderField{Name: "X-Up", Value: "v"})...), EndStream: true, EndHeaders: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(hpack.HeaderField{Name: "x-a", Value: "v"}, hpack.HeaderField{Name: ":path", Value: "/"}), EndStream: true, EndHeaders: true})
		b := enc(append(getFields, hpack.HeaderField{Name: "x-big", Value: string(bytes.Repeat([]byte("v"), 70000))})...)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: b[:16384], EndStream: true})
		fr.WriteContinuation(5, true, b[16384:])
	}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var pre bytes.Buffer
		pre.WriteString(http2.ClientPreface)
		http2.NewFramer(&pre, nil).WriteSettings()
		c := &fuzzConn{r: io.MultiReader(&pre, bytes.NewReader(b))}
		srv := &Server{Limits: Limits{Window: time.Hour}, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Trailer", "X-Done")
			io.WriteString(w, "ok")
			w.Header().Set("X-Done", "1")
		})}
		done := make(chan struct{})
		go func() {
			srv.Serve(context.Background(), c)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return at the end of its input")
		}
	})
}

// fuzzConn reads from r and discards what is written.
type fuzzConn struct {
	r io.Reader
}

func (c *fuzzConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *fuzzConn) Close() error                     { return nil }
func (c *fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }
