package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/proxy/hop"
)

// FuzzParseHead holds ParseHead and AppendForward to net/http: a request
// head ParseHead accepts is one net/http reads, and what AppendForward
// writes reads back in net/http as the same method, target, version and
// end-to-end fields, with every hop-by-hop field gone; the framing read
// here is the one net/http reads from both.
func FuzzParseHead(f *testing.F) {
	fuzzHead(f, true, []string{
		"GET /echo?size=1024 HTTP/1.1\r\nHost: a\r\nUser-Agent: fortio\r\n\r\n",
		"POST /sum HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\n\r\n",
		"PUT /x HTTP/1.0\r\nHost: a\r\nContent-Length: 0\r\nKeep-Alive: 5\r\n\r\n",
		"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum, X-Other\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: a\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\r\n",
	}, func(t *testing.T, b, out []byte, h *Head) {
		orig, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("ParseHead accepted a head net/http refuses (%v):\n%q", err, b)
		}
		fwd, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(out)))
		if err != nil {
			t.Fatalf("net/http refuses the forwarded head (%v):\n%q\nfrom %q", err, out, b)
		}
		if fwd.Method != orig.Method || fwd.RequestURI != orig.RequestURI || fwd.Proto != orig.Proto {
			t.Fatalf("forwarded %s %s %s, came %s %s %s", fwd.Method, fwd.RequestURI, fwd.Proto, orig.Method, orig.RequestURI, orig.Proto)
		}
		if string(h.Method) != orig.Method || string(h.Target) != orig.RequestURI || h.IsHEAD() != (orig.Method == "HEAD") {
			t.Fatalf("head %q %q, net/http reads %s %s", h.Method, h.Target, orig.Method, orig.RequestURI)
		}
		for _, r := range []*http.Request{orig, fwd} { // the framing here, the app's and the next hop's agree
			if h.Chunked != slices.Contains(r.TransferEncoding, "chunked") || !h.Chunked && r.ContentLength != max(h.ContentLength, 0) {
				t.Fatalf("framing %+v here, net/http reads Content-Length %d, Transfer-Encoding %v:\n%q\nforwarded %q", h, r.ContentLength, r.TransferEncoding, b, out)
			}
		}
		checkForwarded(t, orig.Header, fwd.Header, out)
		checkRequestHead(t, b, h, orig)
	})
}

// checkRequestHead holds Request and AppendRequestHead to net/http for a
// head ParseHead accepted: the request read is the one net/http reads
// (method, target, Host, fields), and the head written from it reads back
// in net/http as the same request with the same framing.
func checkRequestHead(t *testing.T, b []byte, h *Head, orig *http.Request) {
	t.Helper()
	req, err := h.Request()
	if err != nil {
		return // the server refuses it too: the relay answers it 400
	}
	if req.Method != orig.Method || req.RequestURI != orig.RequestURI || req.Host != orig.Host || !maps.EqualFunc(req.Header, orig.Header, slices.Equal) {
		t.Fatalf("Request read %s %s host %q %v, net/http %s %s host %q %v", req.Method, req.RequestURI, req.Host, req.Header, orig.Method, orig.RequestURI, orig.Host, orig.Header)
	}
	hop.StripRequestHeaders(req.Header)
	out := AppendRequestHead(nil, req, h)
	fwd, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(out)))
	if err != nil {
		t.Fatalf("net/http refuses the head written (%v):\n%q\nfrom %q", err, out, b)
	}
	if fwd.Method != orig.Method || fwd.Host != orig.Host || fwd.URL.Path != orig.URL.Path || fwd.URL.RawQuery != orig.URL.RawQuery {
		t.Fatalf("written %s %s host %q, came %s %s host %q", fwd.Method, fwd.RequestURI, fwd.Host, orig.Method, orig.RequestURI, orig.Host)
	}
	if h.Chunked != slices.Contains(fwd.TransferEncoding, "chunked") || !h.Chunked && fwd.ContentLength != max(h.ContentLength, 0) {
		t.Fatalf("framing %+v read, written as Content-Length %d, Transfer-Encoding %v: %q", h, fwd.ContentLength, fwd.TransferEncoding, out)
	}
	if declared, want := slices.Sorted(maps.Keys(fwd.Trailer)), slices.Sorted(maps.Keys(orig.Trailer)); !slices.Equal(declared, want) {
		t.Fatalf("trailer fields declared %q, came %q: %q", declared, want, out)
	}
	for k, v := range req.Header {
		if !slices.Equal(fwd.Header[k], v) && k != "Content-Length" && k != "Transfer-Encoding" {
			t.Fatalf("%s: written %q, was %q", k, fwd.Header[k], v)
		}
	}
}

// FuzzParseResponseHead is FuzzParseHead for answers: a status line and
// fields ParseHead accepts are ones net/http reads, forwarded with the
// same status, framing and end-to-end fields, and no hop-by-hop one.
func FuzzParseResponseHead(f *testing.F) {
	fuzzHead(f, false, []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nKeep-Alive: timeout=5\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n",
	}, func(t *testing.T, b, out []byte, h *Head) {
		req := &http.Request{Method: "GET"}
		orig, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), req)
		if err != nil {
			t.Fatalf("ParseHead accepted an answer net/http refuses (%v):\n%q", err, b)
		}
		fwd, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), req)
		if err != nil {
			t.Fatalf("net/http refuses the forwarded answer (%v):\n%q\nfrom %q", err, out, b)
		}
		if fwd.StatusCode != orig.StatusCode || fwd.StatusCode != h.Status {
			t.Fatalf("status %d forwarded as %d (head says %d)", orig.StatusCode, fwd.StatusCode, h.Status)
		}
		if bodied := h.Status >= 200 && h.Status != 204 && h.Status != 304; bodied {
			for _, r := range []*http.Response{orig, fwd} {
				if h.Chunked != slices.Contains(r.TransferEncoding, "chunked") || !h.Chunked && h.ContentLength >= 0 && r.ContentLength != h.ContentLength {
					t.Fatalf("framing %+v here, net/http reads Content-Length %d, Transfer-Encoding %v:\n%q\nforwarded %q", h, r.ContentLength, r.TransferEncoding, b, out)
				}
			}
		}
		checkForwarded(t, orig.Header, fwd.Header, out)
	})
}

// fuzzHead fuzzes ParseHead over heads (requests when request) cut at
// their blank line, from seeds, calling check with each head it accepts
// and what AppendForward writes of it; the fields Len and Field give
// are the head's lines.
func fuzzHead(f *testing.F, request bool, seeds []string, check func(t *testing.T, b, out []byte, h *Head)) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		end := bytes.Index(b, crlf2)
		if end < 0 {
			return
		}
		b = b[:end+4]
		var h Head
		if err := ParseHead(b, request, &h); err == nil {
			if lines := bytes.Count(b, []byte("\r\n")) - 2; h.Len() != lines {
				t.Fatalf("%d fields, %d lines: %q", h.Len(), lines, b)
			}
			for i := range h.Len() {
				name, value := h.Field(i)
				if !bytes.Contains(b, append(append([]byte("\r\n"), name...), ':')) || !bytes.Contains(b, value) {
					t.Fatalf("field %d: %q: %q not in %q", i, name, value, b)
				}
				if len(value) > 0 && (value[0] == ' ' || value[len(value)-1] == '\t' || value[len(value)-1] == ' ') {
					t.Fatalf("field %q value %q not trimmed", name, value)
				}
			}
			check(t, b, h.AppendForward(nil), &h)
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
		framing := k == "Content-Length" || k == "Transfer-Encoding" || k == "Host" // never dropped, even when named
		hop := named[k] && !framing || slices.ContainsFunc(hopFields, func(h string) bool { return strings.EqualFold(h, k) })
		switch got := fwd[k]; {
		case hop && len(got) > 0:
			t.Fatalf("hop-by-hop %s forwarded: %q", k, out)
		case !hop && !slices.Equal(got, v):
			t.Fatalf("%s: forwarded %q, came %q", k, got, v)
		}
	}
}

// TestHopFieldsAsProxyHop holds AppendForward's hop-by-hop fields to the
// sidecar's (proxy/hop.RemoveHeaders): every field the sidecar drops,
// AppendForward drops too, Transfer-Encoding aside (a chunked body is
// passed through with its framing field).
func TestHopFieldsAsProxyHop(t *testing.T) {
	h := http.Header{}
	for _, name := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "X-End-To-End", "Content-Length", "Host", "Authorization"} {
		h.Set(name, "v")
	}
	kept := h.Clone()
	hop.RemoveHeaders(kept)
	for name := range h {
		dropped := kept[name] == nil
		inHead := slices.ContainsFunc(hopFields, func(l string) bool { return strings.EqualFold(l, name) })
		if dropped != inHead && name != "Transfer-Encoding" {
			t.Errorf("%s: proxy/hop drops it %v, AppendForward %v", name, dropped, inHead)
		}
	}
}

// TestParseHeadRefuses lists heads a relay must not forward, and the
// answer each gets.
func TestParseHeadRefuses(t *testing.T) {
	for _, tc := range []struct {
		head   string
		status string
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "400"},
		{"GET / HTTP/1.1\nHost: a\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "501"},
		{"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun\u212Aed\r\n\r\n", "501"}, // KELVIN SIGN: not "chunked" to net/http
		{"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "501"},
		{"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "501"},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "501"},
		{"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "501"},
		{"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
		{"GET a HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
		{"GET /%0 HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
		{"GET /a%g1?b HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
		{"GET http://a:b/ HTTP/1.1\r\nHost: a\r\n\r\n", "400"},
		{"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"},
		{"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\n\r\n", "417"},
		{"GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: 1\r\n", MaxFields) + "\r\n", "400"},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: a,b,c,d,e,f,g,h,i\r\n\r\n", "400"},
	} {
		var h Head
		err := ParseHead([]byte(tc.head), true, &h)
		if err == nil {
			t.Errorf("%q: accepted", tc.head)
			continue
		}
		if got := ErrorAnswer(err); !strings.HasPrefix(got, "HTTP/1.1 "+tc.status+" ") {
			t.Errorf("%q: %v answered %q, want %s", tc.head, err, got, tc.status)
		}
	}
	for _, answer := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 099 Early\r\n\r\n",
		"HTTP/1.1 200 O\x00K\r\n\r\n",
		"HTTP/1.2 200 OK\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		var h Head
		if err := ParseHead([]byte(answer), false, &h); !errors.Is(err, ErrFraming) {
			t.Errorf("%q: %v, want ErrFraming", answer, err)
		}
	}
}

// TestParseHeadReads checks what ParseHead reads of heads it accepts.
func TestParseHeadReads(t *testing.T) {
	var h Head
	b := []byte("POST /a?b HTTP/1.1\r\nHost: x\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 12\r\nX-End:\t v \t\r\n\r\n")
	if err := ParseHead(b, true, &h); err != nil {
		t.Fatal(err)
	}
	if string(h.Method) != "POST" || string(h.Target) != "/a?b" || h.ContentLength != 12 || h.Chunked || !h.Close || h.IsHEAD() || h.Len() != 5 {
		t.Fatalf("%+v", h)
	}
	if name, value := h.Field(4); string(name) != "X-End" || string(value) != "v" {
		t.Fatalf("field 4: %q %q", name, value)
	}
	if got, want := string(h.AppendForward([]byte(">")))[1:], "POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nX-End:\t v \t\r\n\r\n"; got != want {
		t.Fatalf("forwarded %q, want %q", got, want)
	}
	// Connection may not make a relay drop the fields that frame or
	// route the message: they stay.
	b = []byte("POST /a HTTP/1.1\r\nHost: x\r\nConnection: Content-Length, Host, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n")
	if err := ParseHead(b, true, &h); err != nil || !h.Chunked {
		t.Fatalf("Connection naming framing fields: %v %+v", err, h)
	}
	if got, want := string(h.AppendForward(nil)), "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"; got != want {
		t.Fatalf("forwarded %q, want %q", got, want)
	}
	if err := ParseHead([]byte("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"), true, &h); err != nil || string(h.Target) != "/caf\xc3\xa9" {
		t.Fatalf("UTF-8 in the target: %v", err)
	}
	if err := ParseHead([]byte("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"), false, &h); err != nil || !h.Close || !h.HTTP10 || h.Status != 200 {
		t.Fatalf("HTTP/1.0 answer without keep-alive: %v %+v", err, h)
	}
}

// TestChunkLines checks the chunk-size and trailer lines a relay reads.
func TestChunkLines(t *testing.T) {
	for line, want := range map[string]int64{"0": 0, "1a": 26, "FFFFFFFFFFFFFFF": 1<<60 - 1, "5;ext": 5, "5 ;a=\"q\"": 5, "5;a=b;c": 5} {
		if n, err := ParseChunkSize([]byte(line)); err != nil || n != want {
			t.Errorf("%q: %d, %v; want %d", line, n, err, want)
		}
	}
	for _, line := range []string{"", " 5", "5 ", "0x5", "-1", "1000000000000000", "5;", "5;a=\"x", "5\r"} {
		if _, err := ParseChunkSize([]byte(line)); !errors.Is(err, ErrFraming) {
			t.Errorf("%q: %v, want ErrFraming", line, err)
		}
	}
	if err := CheckTrailer([]byte("X-Sum: 1")); err != nil {
		t.Errorf("X-Sum: %v", err)
	}
	for _, line := range []string{"Content-Length: 1", "transfer-encoding: chunked", "Host: a", "Connection: close", "X-Forwarded-Client-Cert: x", " X: 1", "X : 1", "X: \x01", ""} {
		if err := CheckTrailer([]byte(line)); !errors.Is(err, ErrFraming) {
			t.Errorf("%q: %v, want ErrFraming", line, err)
		}
	}
}

// TestAppendResponse reads back in net/http what AppendResponse writes:
// status, fields (a line break in a value cannot start a field), body,
// and for HEAD the length without the body.
func TestAppendResponse(t *testing.T) {
	h := http.Header{"Content-Type": {"text/plain"}, "X-A": {"1", "2"}, "X-Evil": {"a\r\nInjected: yes"}, "Content-Length": {"99"}}
	for _, head := range []bool{false, true} {
		b := AppendResponse(nil, http.StatusForbidden, h, []byte("RBAC: access denied\n"), head)
		method := "GET"
		if head {
			method = "HEAD"
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 403 || resp.ContentLength != 20 || !slices.Equal(resp.Header["X-A"], []string{"1", "2"}) || resp.Header["Injected"] != nil {
			t.Fatalf("%q: %d %d %v %v", b, resp.StatusCode, resp.ContentLength, resp.Header, err)
		}
		if want := map[bool]string{false: "RBAC: access denied\n", true: ""}[head]; string(body) != want {
			t.Fatalf("HEAD %v: body %q", head, body)
		}
	}
}
