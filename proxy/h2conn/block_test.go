package h2conn

import (
	"net/http"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestMalformedHeaderBlocksReset: header blocks that RFC 9113 calls
// malformed (sections 8.2.1 and 8.3) reset their stream with
// PROTOCOL_ERROR, as Go's framer does, and leave the connection and its
// HPACK state working for the next stream; a block split over
// CONTINUATION frames reads as if it came whole.
func TestMalformedHeaderBlocksReset(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Got", r.Header.Get("X-Split"))
	})
	addr := serve(t, &Server{Handler: handler}, nil)
	cases := []struct {
		name  string
		extra []hpack.HeaderField
	}{
		{"upper-case name", []hpack.HeaderField{{Name: "X-Upper", Value: "v"}}},
		{"name not a token", []hpack.HeaderField{{Name: "x y", Value: "v"}}},
		{"value with NUL", []hpack.HeaderField{{Name: "x-nul", Value: "a\x00b"}}},
		{"pseudo header after a regular one", []hpack.HeaderField{{Name: "x-a", Value: "v"}, {Name: ":protocol", Value: "x"}}},
		{"unknown pseudo header", []hpack.HeaderField{{Name: ":bogus", Value: "v"}}},
		{"repeated pseudo header", []hpack.HeaderField{{Name: ":method", Value: "GET"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := dialPeer(t, addr)
			b := p.block("/")
			p.buf.Reset()
			for _, f := range tc.extra {
				p.enc.WriteField(f)
			}
			b = append(b, p.buf.Bytes()...)
			p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b, EndStream: true, EndHeaders: true})
			p.until("RST_STREAM PROTOCOL_ERROR", rst(1, http2.ErrCodeProtocol))
			// The next stream, its block split in three, is served.
			b = p.block("/", hpack.HeaderField{Name: "x-split", Value: "whole"})
			third := len(b) / 3
			p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: b[:third], EndStream: true})
			p.fr.WriteContinuation(3, false, b[third:2*third])
			p.fr.WriteContinuation(3, true, b[2*third:])
			p.until("200 with the split header", func(f http2.Frame) bool {
				h, ok := f.(*http2.MetaHeadersFrame)
				if ok && h.StreamID == 3 {
					for _, hf := range h.RegularFields() {
						if hf.Name == "x-got" && hf.Value == "whole" && h.PseudoValue("status") == "200" {
							return true
						}
					}
					t.Fatalf("stream 3 answered %v", h.Fields)
				}
				return false
			})
		})
	}
}
