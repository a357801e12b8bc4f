package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// compareWrite writes req both ways: byte for byte what Request.Write
// sends (told to send no User-Agent where the request has none).
func compareWrite(t *testing.T, mk func() *http.Request) {
	t.Helper()
	var got, want bytes.Buffer
	gw := bufio.NewWriter(&got)
	gerr := writeRequest(gw, mk())
	gw.Flush()
	ref := mk()
	if _, ok := ref.Header["User-Agent"]; !ok {
		ref.Header["User-Agent"] = []string{""}
	}
	werr := ref.Write(&want)
	if (gerr == nil) != (werr == nil) || gerr == nil && got.String() != want.String() {
		t.Fatalf("fast %v:\n%q (%v)\nRequest.Write:\n%q (%v)", fastWritable(mk()), got.String(), gerr, want.String(), werr)
	}
}

func TestWriteRequest(t *testing.T) {
	cases := []func() *http.Request{
		func() *http.Request {
			return &http.Request{Method: "GET", URL: &url.URL{Path: "/echo", RawQuery: "size=1024"}, Host: "api",
				Header: http.Header{"X-B": {"2", " 3 "}, "X-A": {"1"}, "Host": {"ignored"}}}
		},
		func() *http.Request {
			return &http.Request{Method: "POST", URL: &url.URL{Path: "/p"}, Host: "api:80", Header: http.Header{"User-Agent": {"curl/8"}},
				Body: io.NopCloser(strings.NewReader("abc")), ContentLength: 3}
		},
		func() *http.Request {
			return &http.Request{Method: "PUT", URL: &url.URL{Path: "/p"}, Host: "a", Header: http.Header{}, Body: http.NoBody}
		},
		func() *http.Request {
			return &http.Request{Method: "POST", URL: &url.URL{Path: "/p"}, Host: "a", Header: http.Header{},
				Body: io.NopCloser(strings.NewReader("ab")), ContentLength: 3}
		},
		func() *http.Request {
			return &http.Request{Method: "GET", URL: &url.URL{Path: "/a b"}, Host: "a", Header: http.Header{"X": {"a\r\nb"}}}
		},
	}
	for _, mk := range cases {
		compareWrite(t, mk)
	}
	if !fastWritable(cases[0]()) || !fastWritable(cases[1]()) {
		t.Error("everyday requests are not written by the fast path")
	}
}

func FuzzWriteRequest(f *testing.F) {
	f.Add("GET", "/echo", "size=1", "api", "X-A", "1", "", int64(0))
	f.Add("POST", "/p", "", "api:80", "User-Agent", "u", "body", int64(4))
	f.Fuzz(func(t *testing.T, method, path, query, host, key, value, body string, length int64) {
		mk := func() *http.Request {
			r := &http.Request{Method: method, URL: &url.URL{Path: path, RawQuery: query}, Host: host,
				Header: http.Header{key: {value}}, ContentLength: length}
			if body != "" {
				r.Body = io.NopCloser(strings.NewReader(body))
			}
			return r
		}
		if method == "" || length < 0 || length > 1<<20 || length > 0 && body == "" {
			return // Request.Write's own errors and guesses, not ours
		}
		compareWrite(t, mk)
	})
}
