package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// framingCases are requests whose framing Sigil refuses: each gets want
// (400 unless said) and the connection closes; no handler sees a complete
// request, and nothing after it is read as a request of its own.
var framingCases = []struct {
	name, in string
	want     int
}{
	{"CL and TE chunked then a second request", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", 400},
	{"TE with space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400},
	{"any field with space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-Test : 1\r\n\r\n", 400},
	{"identity header with space before colon", "GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-client-cert : URI=spiffe://x/y\r\n\r\n", 400},
	{"Host with space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
	{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400},
	{"chunk size 0x5", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400},
	{"chunk size +5", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", 400},
	{"chunk size with trailing space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", 400},
	{"chunk size overflow", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n", 400},
	{"TE chunked, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
	{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
	{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 1\r\n\r\nx", 400},
	{"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400},
	{"TE twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	{"TE with vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \vchunked\r\n\r\n0\r\n\r\n", 400},
	{"TE obs-folded", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400},
	{"differing Content-Lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", 400},
	{"Content-Length +1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 400},
	{"Content-Length list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx", 400},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n", 400},
	{"bare CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400},
	{"bare LF line end", "GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400},
	{"NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400},
	{"invalid field name", "GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", 400},
	{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
	{"chunk extension with a bad character", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b\x01\"\r\nhello\r\n0\r\n\r\n", 400},
	{"chunk data without CRLF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400},
	{"forbidden trailer", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n", 400},
	{"identity trailer", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Forwarded-Client-Cert: By=spiffe://x\r\n\r\n", 400},
	{"HTTP/1.0 with TE", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
	{"unknown expectation", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continueX\r\nContent-Length: 1\r\n\r\nx", 417},
}

// TestHTTP1FramingRefused: the server's side of every case, at the h1
// level (e2e/framing_test.go runs them through real sidecars).
func TestHTTP1FramingRefused(t *testing.T) {
	var mu sync.Mutex
	var complete []string // requests a handler read to their end
	_, cl, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err == nil {
			mu.Lock()
			complete = append(complete, r.Method+" "+r.URL.Path)
			mu.Unlock()
		}
		// What a proxy does when its upstream failed: the caller must
		// still get 400 for its malformed body.
		w.WriteHeader(http.StatusBadGateway)
	}))
	conn := func() net.Conn {
		c, err := cl.Dial(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range framingCases {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			complete = nil
			mu.Unlock()
			c := conn()
			defer c.Close()
			if _, err := io.WriteString(c, tc.in); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			out, err := io.ReadAll(c) // to the server's close
			if err != nil {
				t.Fatalf("reading the answer: %v (got %q)", err, out)
			}
			want := "HTTP/1.1 " + http.StatusText(tc.want)
			if s := string(out); !strings.HasPrefix(s, "HTTP/1.1 "+strconv.Itoa(tc.want)+" ") || strings.Count(s, "HTTP/1.1 ") != 1 {
				t.Errorf("got %q, want one %s and the connection closed", s, want)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(complete) > 0 {
				t.Errorf("a handler read %v to its end", complete)
			}
		})
	}
	// Well-formed relatives still pass.
	for _, in := range []string{
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n5;name=\"v\\\"x\";n2=t\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
	} {
		c := conn()
		io.WriteString(c, in)
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 502") && !strings.HasPrefix(line, "HTTP/1.1 100") {
			t.Errorf("%q: got %q, %v; want it served", in, line, err)
		}
	}
}

func TestChunkedBody(t *testing.T) {
	for _, tc := range []struct {
		in, body, rest string
		trailer        http.Header
		err            bool
	}{
		{in: "5\r\nhello\r\n0\r\n\r\nNEXT", body: "hello", rest: "NEXT"},
		{in: "a;x=y\r\n0123456789\r\n5 ; q=\"a b\"\r\nhello\r\n0\r\nX-Sum: 7\r\n\r\n", body: "0123456789hello", trailer: http.Header{"X-Sum": {"7"}}},
		{in: "0\r\n\r\n"},
		{in: "0x5\r\nhello\r\n0\r\n\r\n", err: true},
		{in: "-5\r\nhello\r\n0\r\n\r\n", err: true},
		{in: "5\nhello\r\n0\r\n\r\n", err: true},
		{in: "5\r\nhello0\r\n\r\n", err: true},
		{in: "5\r\nhel", err: true},
		{in: "5;\r\nhello\r\n0\r\n\r\n", err: true},
		{in: "5;a=\"b\r\nhello\r\n0\r\n\r\n", err: true},
		{in: "fffffffffffffffff\r\n", err: true},
		{in: "0\r\nHost: x\r\n\r\n", err: true},
		{in: "0\r\nX-A: a\r\n b\r\n\r\n", err: true},
		{in: "0\r\n" + strings.Repeat("X-A: "+strings.Repeat("a", 1000)+"\r\n", 70) + "\r\n", err: true},
	} {
		br := bufio.NewReaderSize(strings.NewReader(tc.in), bufSize)
		var trailer http.Header
		got, err := io.ReadAll(&chunkedBody{br: br, trailer: &trailer})
		if tc.err {
			if err == nil {
				t.Errorf("%q: read %q, want an error", tc.in, got)
			}
			continue
		}
		rest, _ := io.ReadAll(br)
		if err != nil || string(got) != tc.body || string(rest) != tc.rest || len(trailer) != len(tc.trailer) || trailer.Get("X-Sum") != tc.trailer.Get("X-Sum") {
			t.Errorf("%q: body %q rest %q trailer %v err %v", tc.in, got, rest, trailer, err)
		}
	}
}

// rawServer answers each connection with script; it returns the address
// and counts the requests it read.
func rawServer(t *testing.T, script func(c net.Conn, br *bufio.Reader)) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				script(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String(), new(atomic.Int64)
}

func rawClient(addr string, reasons *[]string, mu *sync.Mutex) (*Client, *atomic.Int64) {
	dials := new(atomic.Int64)
	return &Client{
		Dial: func(ctx context.Context) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		ProtocolError: func(r string) { mu.Lock(); *reasons = append(*reasons, r); mu.Unlock() },
	}, dials
}

// TestHTTP1FramingResponses: responses whose framing is refused fail the
// round trip (or their body) and their connection is never reused.
func TestHTTP1FramingResponses(t *testing.T) {
	for _, tc := range []struct{ name, resp string }{
		{"CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"TE gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
		{"chunk size 0x5", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"},
		{"differing lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: a\r\n b\r\n\r\nx"},
		{"NUL", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-A: a\x00\r\n\r\nx"},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx"},
		{"HTTP/1.0 with TE", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"bad chunk later", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n+3\r\nabc\r\n0\r\n\r\n"},
		{"forbidden trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"101 unasked", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := rawServer(t, func(c net.Conn, br *bufio.Reader) {
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					io.WriteString(c, tc.resp)
				}
			})
			var mu sync.Mutex
			var reasons []string
			cl, dials := rawClient(addr, &reasons, &mu)
			defer cl.CloseIdle(true)
			for range 2 {
				req, _ := http.NewRequest("GET", "http://svc/", nil)
				resp, err := cl.RoundTrip(req)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if !errors.Is(err, ErrFraming) {
					t.Errorf("got %v, want ErrFraming", err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if dials.Load() != 2 || len(reasons) != 2 || reasons[0] != ReasonMalformedResponse {
				t.Errorf("%d dials, reasons %v; want 2 and malformed_response twice", dials.Load(), reasons)
			}
		})
	}
}

// FuzzReadStrict holds the strict path to net/http: whatever it reads to
// the end, net/http reads the same way (same body, same bytes after it),
// so Sigil is never the more lenient of the two.
func FuzzReadStrict(f *testing.F) {
	for _, c := range framingCases {
		f.Add(c.in)
	}
	f.Add("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
	f.Add("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		br := bufio.NewReaderSize(strings.NewReader(in), bufSize)
		got, err := readRequest(br, nil)
		if err != nil {
			return
		}
		gb, err := io.ReadAll(got.Body)
		if err != nil {
			return
		}
		wr := bufio.NewReaderSize(strings.NewReader(in), bufSize)
		want, err := http.ReadRequest(wr)
		if err != nil {
			t.Fatalf("%q: read here, refused by net/http: %v", in, err)
		}
		wb, err := io.ReadAll(want.Body)
		if err != nil {
			t.Fatalf("%q: body read here, refused by net/http: %v", in, err)
		}
		grest, _ := io.ReadAll(br)
		wrest, _ := io.ReadAll(wr)
		if !bytes.Equal(gb, wb) || !bytes.Equal(grest, wrest) || got.Method != want.Method || got.RequestURI != want.RequestURI {
			t.Fatalf("%q: body %q rest %q, net/http body %q rest %q", in, gb, grest, wb, wrest)
		}
	})
}

// FuzzReadStrictResponse is FuzzReadStrict for responses.
func FuzzReadStrictResponse(f *testing.F) {
	for _, c := range responseCases {
		f.Add(c.in, c.method == "HEAD")
	}
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nrest", false)
	f.Add("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false)
	f.Fuzz(func(t *testing.T, in string, head bool) {
		req := &http.Request{Method: "GET"}
		if head {
			req.Method = "HEAD"
		}
		br := bufio.NewReaderSize(strings.NewReader(in), bufSize)
		got, _, err := readResponse(br, req)
		if err != nil {
			return
		}
		gb, err := io.ReadAll(got.Body)
		if err != nil {
			return
		}
		wr := bufio.NewReaderSize(strings.NewReader(in), bufSize)
		want, err := http.ReadResponse(wr, req)
		if err != nil {
			t.Fatalf("%q: read here, refused by net/http: %v", in, err)
		}
		wb, err := io.ReadAll(want.Body)
		if err != nil {
			t.Fatalf("%q: body read here, refused by net/http: %v", in, err)
		}
		grest, _ := io.ReadAll(br)
		wrest, _ := io.ReadAll(wr)
		if !bytes.Equal(gb, wb) || !bytes.Equal(grest, wrest) || got.StatusCode != want.StatusCode {
			t.Fatalf("%q: body %q rest %q, net/http body %q rest %q", in, gb, grest, wb, wrest)
		}
	})
}
