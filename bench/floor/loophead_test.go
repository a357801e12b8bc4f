package main

import (
	"bufio"
	"bytes"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/proxy/hop"
)

// FuzzAppendHead holds the -loop path's head rewriting to net/http: a
// request head appendHead accepts is one net/http reads, and what it
// forwards reads back in net/http as the same method, target, version
// and end-to-end fields, with every hop-by-hop field gone.
func FuzzAppendHead(f *testing.F) {
	fuzzHead(f, true, []string{
		"GET /echo?size=1024 HTTP/1.1\r\nHost: a\r\nUser-Agent: fortio\r\n\r\n",
		"POST /sum HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\n\r\n",
		"PUT /x HTTP/1.0\r\nHost: a\r\nContent-Length: 0\r\nKeep-Alive: 5\r\n\r\n",
		"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: a\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\r\n",
	}, func(t *testing.T, b, out []byte, h head) {
		orig, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("appendHead accepted a head net/http refuses (%v):\n%q", err, b)
		}
		fwd, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(out)))
		if err != nil {
			t.Fatalf("net/http refuses the forwarded head (%v):\n%q\nfrom %q", err, out, b)
		}
		if fwd.Method != orig.Method || fwd.RequestURI != orig.RequestURI || fwd.Proto != orig.Proto {
			t.Fatalf("forwarded %s %s %s, came %s %s %s", fwd.Method, fwd.RequestURI, fwd.Proto, orig.Method, orig.RequestURI, orig.Proto)
		}
		if h.isHEAD != (orig.Method == "HEAD") {
			t.Fatalf("framing %+v for %q", h, b)
		}
		for _, r := range []*http.Request{orig, fwd} { // the framing here, the app's and the next hop's agree
			if h.chunked != slices.Contains(r.TransferEncoding, "chunked") || !h.chunked && r.ContentLength != max(h.contentLength, 0) {
				t.Fatalf("framing %+v here, net/http reads Content-Length %d, Transfer-Encoding %v:\n%q\nforwarded %q", h, r.ContentLength, r.TransferEncoding, b, out)
			}
		}
		checkForwarded(t, orig.Header, fwd.Header, out)
	})
}

// FuzzAppendResponseHead is FuzzAppendHead for answers: a status line
// and fields appendHead accepts are ones net/http reads, forwarded with
// the same status, framing and end-to-end fields, and no hop-by-hop one.
func FuzzAppendResponseHead(f *testing.F) {
	fuzzHead(f, false, []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nKeep-Alive: timeout=5\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n",
	}, func(t *testing.T, b, out []byte, h head) {
		req := &http.Request{Method: "GET"}
		orig, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), req)
		if err != nil {
			t.Fatalf("appendHead accepted an answer net/http refuses (%v):\n%q", err, b)
		}
		fwd, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), req)
		if err != nil {
			t.Fatalf("net/http refuses the forwarded answer (%v):\n%q\nfrom %q", err, out, b)
		}
		if fwd.StatusCode != orig.StatusCode || fwd.StatusCode != h.status {
			t.Fatalf("status %d forwarded as %d (head says %d)", orig.StatusCode, fwd.StatusCode, h.status)
		}
		if bodied := h.status >= 200 && h.status != 204 && h.status != 304; bodied {
			for _, r := range []*http.Response{orig, fwd} {
				if h.chunked != slices.Contains(r.TransferEncoding, "chunked") || !h.chunked && h.contentLength >= 0 && r.ContentLength != h.contentLength {
					t.Fatalf("framing %+v here, net/http reads Content-Length %d, Transfer-Encoding %v:\n%q\nforwarded %q", h, r.ContentLength, r.TransferEncoding, b, out)
				}
			}
		}
		checkForwarded(t, orig.Header, fwd.Header, out)
	})
}

// fuzzHead fuzzes appendHead over heads (requests when isReq) cut at
// their blank line, from seeds, calling check with each head it accepts,
// what it forwards and the framing it read.
func fuzzHead(f *testing.F, isReq bool, seeds []string, check func(t *testing.T, b, out []byte, h head)) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		end := bytes.Index(b, []byte("\r\n\r\n"))
		if end < 0 {
			return
		}
		b = b[:end+4]
		if out, h, err := appendHead(nil, b, isReq); err == nil {
			check(t, b, out, h)
		}
	})
}

// checkForwarded fails t if a hop-by-hop field of orig (RFC 9110
// §7.6.1, or named by its Connection field) is in fwd, or an end-to-end
// one is not there as it came.
func checkForwarded(t *testing.T, orig, fwd http.Header, out []byte) {
	t.Helper()
	named := map[string]bool{}
	for _, v := range orig.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			named[http.CanonicalHeaderKey(strings.TrimSpace(tok))] = true
		}
	}
	for k, v := range orig {
		hop := named[k] || slices.ContainsFunc(hopHeaders, func(h string) bool { return strings.EqualFold(h, k) })
		switch got := fwd[k]; {
		case hop && len(got) > 0:
			t.Fatalf("hop-by-hop %s forwarded: %q", k, out)
		case !hop && !slices.Equal(got, v):
			t.Fatalf("%s: forwarded %q, came %q", k, got, v)
		}
	}
}

// TestHopHeadersAsProxyHop holds the loop's list of hop-by-hop fields
// to the sidecar's (proxy/hop.RemoveHeaders): every field the sidecar
// drops, the loop drops too, Transfer-Encoding aside (the loop passes
// chunked bodies through with their framing field).
func TestHopHeadersAsProxyHop(t *testing.T) {
	h := http.Header{}
	for _, name := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "X-End-To-End", "Content-Length", "Host", "Authorization"} {
		h.Set(name, "v")
	}
	kept := h.Clone()
	hop.RemoveHeaders(kept)
	for name := range h {
		dropped := kept[name] == nil
		inLoop := slices.ContainsFunc(hopHeaders, func(l string) bool { return strings.EqualFold(l, name) })
		if dropped != inLoop && name != "Transfer-Encoding" {
			t.Errorf("%s: proxy/hop drops it %v, the loop %v", name, dropped, inLoop)
		}
	}
}

// TestAppendHeadRefuses lists heads the -loop path must not forward.
func TestAppendHeadRefuses(t *testing.T) {
	for _, tc := range []struct {
		head string
		want error
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", errMalformed},
		{"GET / HTTP/1.1\nHost: a\r\n\r\n", errMalformed},
		{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", errMalformed},
		{"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", errMalformed},
		{"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", errMalformed},
		{"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", errMalformed},
		{"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", errUnsupported},
		{"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", errUnsupported},
		{"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", errUnsupported},
		{"POST / HTTP/1.1\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n", errMalformed},
		{"POST / HTTP/1.1\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n", errMalformed},
		{"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", errUnsupported},
		{"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", errUnsupported},
		{"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", errMalformed},
		{"GET / HTTP/2.0\r\nHost: a\r\n\r\n", errMalformed},
		{"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", errMalformed},
	} {
		if _, _, err := appendHead(nil, []byte(tc.head), true); err != tc.want {
			t.Errorf("%q: %v, want %v", tc.head, err, tc.want)
		}
	}
}
