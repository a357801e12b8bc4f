// Package h2conn holds HTTP/2 connections between two sidecars: a client
// that opens many streams on one connection per peer, and a server that
// serves an http.Handler per stream. Frames on the wire are plain HTTP/2
// (RFC 9113) with HPACK (RFC 7541), so Go's net/http HTTP/2, grpc-go and
// curl talk to either side and packet captures read as HTTP/2.
//
// # Why parts of it are hand-written
//
// Framing and HPACK come from golang.org/x/net/http2; header blocks are
// gathered from HEADERS and CONTINUATION frames here (blockReader, with
// the framer's checks), into one reused frame and field slice per
// connection, and handlers run on goroutines kept for the next stream,
// so that a request costs few allocations and no stack growth. The
// connection's writer is our own: one goroutine per connection drains a queue of
// frames (HEADERS, DATA, trailers, WINDOW_UPDATE, SETTINGS and PING
// acknowledgements, RST_STREAM, GOAWAY) from every stream into one buffer
// and writes it with one call when the queue is empty, as grpc-go's
// "loopy" writer does. Go's own HTTP/2 server and transport write and
// flush per frame: measured on TLS 1.3 loopback at 64 concurrent 1 KiB
// requests they make 2.7–2.9 write calls per request over both ends,
// where the frames of many streams here leave in one
// (BenchmarkH2Conn in bench/, figures in bench/README.md). It is the hot
// path of every request between sidecars, so it was measured before and
// after.
//
// # Large bodies
//
// A body written in pieces of up to 16 KiB is copied into pooled chunks
// and queued at once; a larger piece is lent to the writer uncopied
// (the sender waits until the writer is done with it, which costs less
// than the copy), and the writer sends every lent body a frame of at
// most 64 KiB per turn, between the frames other streams queued, so one
// large body does not hold the others back. Received bodies go into
// pooled 16 KiB chunks, never into one slice grown to the body's size.
//
// # Flow control
//
// Each stream's receive window (Limits.StreamWindow) is returned with
// WINDOW_UPDATE as the consumer reads the body; the connection's window is
// returned as DATA arrives, as long as the bytes buffered for unread
// bodies stay under Limits.ConnBuffer. A consumer that stops reading so
// stalls only its own stream, never the connection, and a peer can make
// one connection buffer at most ConnBuffer plus one connection window.
//
// # Limits against a hostile peer
//
// Header lists over Limits.MaxHeaderListSize are answered 431 and never
// buffered whole, and CONTINUATION floods close the connection (the
// framer's checks, CVE-2024-27316's kind); more streams than
// Limits.MaxStreams are refused with REFUSED_STREAM, a stream's slot is
// held until its handler returns (a reset does not free it early); more
// than Limits.MaxResets RST_STREAM frames beyond the streams not reset
// (CVE-2023-44487, rapid reset) or
// Limits.MaxControlFrames control frames that carry no request (SETTINGS,
// PING, PRIORITY, zero WINDOW_UPDATE, empty DATA) beyond those earned by
// progress (package h2abuse: grpc-go's ping rule) within Limits.Window
// close the connection with GOAWAY ENHANCE_YOUR_CALM, as Envoy does.
//
// Not supported: server push (refused with SETTINGS_ENABLE_PUSH 0),
// stream priorities (PRIORITY frames are read and ignored), extended
// CONNECT (RFC 8441) and h2c upgrade; Dial hands over connections on
// which TLS has already negotiated "h2".
package h2conn
