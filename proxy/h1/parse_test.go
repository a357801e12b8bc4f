package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// Requests the fast path must take (the proxy's everyday traffic) and
// ones it must leave to net/http.
var requestCases = []struct {
	in   string
	fast bool
}{
	{"GET /echo?size=1024 HTTP/1.1\r\nHost: api\r\nUser-Agent: fortio.org/fortio-1.68.2\r\n\r\n", true},
	{"POST /v1/items HTTP/1.1\r\nHost: api:8080\r\nContent-Type: application/json\r\nContent-Length: 7\r\nx-lower: a\r\nAccept: a\r\nAccept: b\r\n\r\n{\"a\":1}", true},
	{"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n", true},
	{"GET / HTTP/1.1\r\n\r\n", false}, // no Host: RFC 9112 §3.2 makes it a 400, which the strict path says
	{"GET /a%20b HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"GET /a? HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n", false},
	{"GET / HTTP/1.0\r\nHost: a\r\n\r\n", false},
	{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", false},
	{"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", false},
	{"GET / HTTP/1.1\nHost: a\n\n", false},
	{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false},
	{"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n", false},
	{"GET / HTTP/1.1\r\nBad Key: a\r\n\r\n", false},
}

func TestParseRequestCases(t *testing.T) {
	for _, c := range requestCases {
		br := bufio.NewReaderSize(strings.NewReader(c.in), bufSize)
		br.Peek(1)
		head, ok := peekHead(br)
		fast := ok && parseRequest(head, br, nil) != nil
		if fast != c.fast {
			t.Errorf("%q: fast path %v, want %v", c.in, fast, c.fast)
		}
		compareRequest(t, c.in)
	}
}

func TestReadRequestAllocs(t *testing.T) {
	in := requestCases[0].in
	r := strings.NewReader(in)
	br := bufio.NewReaderSize(r, bufSize)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(in)
		br.Reset(r)
		if _, err := readRequest(br, nil); err != nil {
			t.Fatal(err)
		}
	})
	// The head as one string, the map, its values, the request.
	if allocs > 5 {
		t.Errorf("readRequest: %v allocations, want at most 5", allocs)
	}
}

// compareRequest parses in both ways; where the fast path answers, it
// must answer as net/http does, body and what follows included.
func compareRequest(t *testing.T, in string) {
	t.Helper()
	br := bufio.NewReaderSize(strings.NewReader(in), bufSize)
	head, ok := peekHead(br)
	if !ok {
		return
	}
	got := parseRequest(head, br, nil)
	if got == nil {
		return
	}
	br.Discard(len(head))
	wr := bufio.NewReaderSize(strings.NewReader(in), bufSize)
	want, err := http.ReadRequest(wr)
	if err != nil {
		t.Fatalf("%q: fast path took a request net/http refuses: %v", in, err)
	}
	type view struct {
		Method, RequestURI, Proto, Host string
		Major, Minor                    int
		URL                             url.URL
		Header                          http.Header
		ContentLength                   int64
		Close                           bool
		TE                              []string
		Trailer                         http.Header
	}
	v := func(r *http.Request) view {
		return view{r.Method, r.RequestURI, r.Proto, r.Host, r.ProtoMajor, r.ProtoMinor, *r.URL, r.Header, r.ContentLength, r.Close, r.TransferEncoding, r.Trailer}
	}
	if g, w := v(got), v(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("%q:\n fast    %+v\n net/http %+v", in, g, w)
	}
	compareRest(t, in, got.Body, want.Body, br, wr)
}

// compareRest compares two bodies and what is left after them.
func compareRest(t *testing.T, in string, got, want io.Reader, gr, wr *bufio.Reader) {
	t.Helper()
	gb, gerr := io.ReadAll(got)
	wb, werr := io.ReadAll(want)
	if !bytes.Equal(gb, wb) || (gerr == nil) != (werr == nil) {
		t.Fatalf("%q: body %q (%v), net/http %q (%v)", in, gb, gerr, wb, werr)
	}
	if gerr != nil {
		return
	}
	grest, _ := io.ReadAll(gr)
	wrest, _ := io.ReadAll(wr)
	if !bytes.Equal(grest, wrest) {
		t.Fatalf("%q: rest %q, net/http %q", in, grest, wrest)
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, c := range requestCases {
		f.Add(c.in)
	}
	f.Fuzz(func(t *testing.T, in string) { compareRequest(t, in) })
}

var responseCases = []struct {
	in     string
	method string
	fast   bool
}{
	{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nDate: Thu, 26 Nov 2026 05:00:00 GMT\r\n\r\nhello", "GET", true},
	{"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "POST", true},
	{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "HEAD", false},
	{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "GET", false},
	{"HTTP/1.1 200 OK\r\n\r\nto the end", "GET", false},
	{"HTTP/1.1 204 No Content\r\n\r\n", "GET", false},
	{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "PUT", false},
	{"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", false},
}

func TestParseResponseCases(t *testing.T) {
	for _, c := range responseCases {
		req := &http.Request{Method: c.method}
		br := bufio.NewReaderSize(strings.NewReader(c.in), bufSize)
		br.Peek(1)
		head, ok := peekHead(br)
		fast := ok && c.method != "HEAD" && parseResponse(head, br, req) != nil
		if fast != c.fast {
			t.Errorf("%q: fast path %v, want %v", c.in, fast, c.fast)
		}
		compareResponse(t, c.in, c.method)
	}
}

func compareResponse(t *testing.T, in, method string) {
	t.Helper()
	req := &http.Request{Method: method}
	br := bufio.NewReaderSize(strings.NewReader(in), bufSize)
	head, ok := peekHead(br)
	if !ok || method == http.MethodHead {
		return
	}
	p := parseResponse(head, br, req)
	if p == nil {
		return
	}
	got := &p.resp
	br.Discard(len(head))
	wr := bufio.NewReaderSize(strings.NewReader(in), bufSize)
	want, err := http.ReadResponse(wr, req)
	if err != nil {
		t.Fatalf("%q: fast path took a response net/http refuses: %v", in, err)
	}
	type view struct {
		Status, Proto string
		Code          int
		Major, Minor  int
		Header        http.Header
		ContentLength int64
		Close         bool
		TE            []string
		Trailer       http.Header
		Request       *http.Request
		Uncompressed  bool
	}
	v := func(r *http.Response) view {
		return view{r.Status, r.Proto, r.StatusCode, r.ProtoMajor, r.ProtoMinor, r.Header, r.ContentLength, r.Close, r.TransferEncoding, r.Trailer, r.Request, r.Uncompressed}
	}
	if g, w := v(got), v(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("%q:\n fast    %+v\n net/http %+v", in, g, w)
	}
	compareRest(t, in, got.Body, want.Body, br, wr)
}

func FuzzParseResponse(f *testing.F) {
	for _, c := range responseCases {
		f.Add(c.in, c.method == "HEAD")
	}
	f.Fuzz(func(t *testing.T, in string, head bool) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		compareResponse(t, in, method)
	})
}
