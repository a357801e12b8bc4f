package proxy

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// frames builds a client's byte stream: the preface, then what f writes.
func frames(t testing.TB, f func(fr *http2.Framer)) []byte {
	var b bytes.Buffer
	b.WriteString(h2ClientPreface)
	f(http2.NewFramer(&b, nil))
	return b.Bytes()
}

func TestFrameGuardLimits(t *testing.T) {
	lim := h2Limits{maxResets: 10, maxControl: 10, window: time.Hour}
	hdr := []byte{0x82} // :method GET, from the static table
	for _, tc := range []struct {
		name string
		n    int
		f    func(fr *http2.Framer, i int)
		want string
	}{
		{"requests with END_STREAM", 100, func(fr *http2.Framer, i int) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hdr, EndStream: true, EndHeaders: true})
		}, ""},
		{"acks and window updates", 100, func(fr *http2.Framer, i int) {
			fr.WriteSettingsAck()
			fr.WritePing(true, [8]byte{})
			fr.WriteWindowUpdate(0, 1000)
			fr.WriteData(1, false, []byte("x"))
		}, ""},
		{"rapid reset", 11, func(fr *http2.Framer, i int) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hdr, EndHeaders: true})
			fr.WriteRSTStream(uint32(2*i+1), http2.ErrCodeCancel)
		}, abuseRapidReset},
		{"settings", 11, func(fr *http2.Framer, i int) { fr.WriteSettings() }, abuseControlFlood},
		{"ping", 11, func(fr *http2.Framer, i int) { fr.WritePing(false, [8]byte{}) }, abuseControlFlood},
		{"priority", 11, func(fr *http2.Framer, i int) { fr.WritePriority(3, http2.PriorityParam{Weight: 1}) }, abuseControlFlood},
		{"zero window update", 11, func(fr *http2.Framer, i int) { fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 1, []byte{0, 0, 0, 0}) }, abuseControlFlood},
		{"empty data", 11, func(fr *http2.Framer, i int) { fr.WriteData(1, false, nil) }, abuseControlFlood},
		{"ten of each kind", 10, func(fr *http2.Framer, i int) {
			fr.WritePing(false, [8]byte{})
			fr.WriteRSTStream(1, http2.ErrCodeCancel)
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := frames(t, func(fr *http2.Framer) {
				for i := range tc.n {
					tc.f(fr, i)
				}
			})
			// One byte at a time and all at once judge alike.
			whole := newFrameGuard(nil, lim, nil)
			bytewise := newFrameGuard(nil, lim, nil)
			got := whole.scan(in)
			var got1 string
			for i := range in {
				if got1 = bytewise.scan(in[i : i+1]); got1 != "" {
					break
				}
			}
			if got != tc.want || got1 != tc.want {
				t.Errorf("verdict %q (bytewise %q), want %q", got, got1, tc.want)
			}
		})
	}
}

// TestFrameGuardEarnedControlFrames: control frames that follow progress
// (HEADERS or DATA the server sent, HEADERS the client sent) are free, as
// grpc-go's server lets a ping after its data pass (BDP estimation);
// control frames with no progress around them are a flood however the
// server answers them.
func TestFrameGuardEarnedControlFrames(t *testing.T) {
	lim := h2Limits{maxResets: 10, maxControl: 10, window: time.Hour}
	hdr := []byte{0x82}
	build := func(f func(fr *http2.Framer)) []byte {
		var b bytes.Buffer
		f(http2.NewFramer(&b, nil))
		return b.Bytes()
	}
	for _, tc := range []struct {
		name           string
		n              int
		server, client func(fr *http2.Framer, i int)
		want           string
	}{
		{"BDP: a ping per DATA received", 1000,
			func(fr *http2.Framer, i int) { fr.WriteData(1, false, []byte("response")) },
			func(fr *http2.Framer, i int) { fr.WritePing(false, [8]byte{byte(i)}) }, ""},
		{"unary calls, a ping each", 1000,
			func(fr *http2.Framer, i int) {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hdr, EndHeaders: true, EndStream: true})
			},
			func(fr *http2.Framer, i int) {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hdr, EndHeaders: true, EndStream: true})
				fr.WritePing(false, [8]byte{byte(i)})
			}, ""},
		{"a PRIORITY with each request", 1000, nil,
			func(fr *http2.Framer, i int) {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hdr, EndHeaders: true, EndStream: true})
				fr.WritePriority(uint32(2*i+1), http2.PriorityParam{Weight: 1})
			}, ""},
		{"pings answered with ACKs only", 11,
			func(fr *http2.Framer, i int) { fr.WritePing(true, [8]byte{byte(i)}) },
			func(fr *http2.Framer, i int) { fr.WritePing(false, [8]byte{byte(i)}) }, abuseControlFlood},
		{"two pings per DATA", 30,
			func(fr *http2.Framer, i int) { fr.WriteData(1, false, []byte("response")) },
			func(fr *http2.Framer, i int) { fr.WritePing(false, [8]byte{1}); fr.WritePing(false, [8]byte{2}) }, abuseControlFlood},
		{"deadlines: one call in four reset", 1000, nil,
			func(fr *http2.Framer, i int) {
				id := uint32(2*i + 1)
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hdr, EndHeaders: true, EndStream: true})
				if i%4 == 0 {
					fr.WriteRSTStream(id, http2.ErrCodeCancel)
				}
			}, ""},
		{"resets are not earned", 11,
			func(fr *http2.Framer, i int) { fr.WriteData(1, false, []byte("response")) },
			func(fr *http2.Framer, i int) { fr.WriteRSTStream(uint32(2*i+1), http2.ErrCodeCancel) }, abuseRapidReset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newFrameGuard(nil, lim, nil)
			got := g.scan([]byte(h2ClientPreface))
			for i := 0; i < tc.n && got == ""; i++ {
				if tc.server != nil {
					// One byte at a time: frame boundaries are followed
					// across writes.
					for _, b := range build(func(fr *http2.Framer) { tc.server(fr, i) }) {
						g.follow([]byte{b})
					}
				}
				got = g.scan(build(func(fr *http2.Framer) { tc.client(fr, i) }))
			}
			if got != tc.want {
				t.Errorf("verdict %q, want %q", got, tc.want)
			}
		})
	}
}

// A client over its limit gets GOAWAY ENHANCE_YOUR_CALM naming the last
// stream it opened, then the close.
func TestFrameGuardSendsGoAway(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	var reasons []string
	g := newFrameGuard(server, h2Limits{maxResets: 1, maxControl: 1, window: time.Hour}, func(r string) { reasons = append(reasons, r) })
	go func() {
		client.Write(frames(t, func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: []byte{0x82}, EndHeaders: true})
			fr.WriteRSTStream(7, http2.ErrCodeCancel)
			fr.WriteRSTStream(7, http2.ErrCodeCancel)
		}))
	}()
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := g.Read(buf); err != nil {
				readErr <- err
				return
			}
		}
	}()
	fr := http2.NewFramer(nil, client)
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	ga, ok := f.(*http2.GoAwayFrame)
	if !ok || ga.ErrCode != http2.ErrCodeEnhanceYourCalm || ga.LastStreamID != 7 {
		t.Fatalf("got %v, want GOAWAY ENHANCE_YOUR_CALM last stream 7", f)
	}
	if err := <-readErr; err != errEnhanceYourCalm {
		t.Errorf("read error %v", err)
	}
	if _, err := g.Write([]byte("x")); err == nil {
		t.Error("write after GOAWAY succeeded")
	}
	if len(reasons) != 1 || reasons[0] != abuseRapidReset {
		t.Errorf("reasons %v", reasons)
	}
}

// FuzzFrameGuardScan: any byte stream, however split, gets the same
// verdict and never a panic.
func FuzzFrameGuardScan(f *testing.F) {
	f.Add(frames(f, func(fr *http2.Framer) { fr.WriteSettings(); fr.WritePing(false, [8]byte{}) }), 5)
	f.Add(frames(f, func(fr *http2.Framer) { fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 1, []byte{0, 0, 0, 0}) }), 27)
	f.Add([]byte(h2ClientPreface+"\x00\x00\x04\x08\x00\x00\x00\x00\x01\x00\x00"), 30)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		lim := h2Limits{maxResets: 2, maxControl: 2, window: time.Hour}
		a := newFrameGuard(nil, lim, nil)
		b := newFrameGuard(nil, lim, nil)
		got := a.scan(in)
		split = min(max(split, 0), len(in))
		got2 := b.scan(in[:split])
		if got2 == "" {
			got2 = b.scan(in[split:])
		}
		if got != got2 {
			t.Errorf("whole %q, split at %d %q", got, split, got2)
		}
	})
}

func BenchmarkFrameGuardScan(b *testing.B) {
	in := frames(b, func(fr *http2.Framer) {
		for i := range 100 {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: make([]byte, 200), EndHeaders: true})
			fr.WriteData(uint32(2*i+1), true, make([]byte, 16<<10))
		}
	})[len(h2ClientPreface):]
	b.SetBytes(int64(len(in)))
	g := newFrameGuard(nil, h2Limits{maxResets: 1 << 30, maxControl: 1 << 30, window: time.Hour}, nil)
	g.skip = 0
	for b.Loop() {
		for off := 0; off < len(in); off += 4096 {
			g.scan(in[off:min(off+4096, len(in))])
		}
	}
}
