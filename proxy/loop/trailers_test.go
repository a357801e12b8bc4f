//go:build linux

package loop

import (
	"bufio"
	"io"
	"testing"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// TestDropRequestTrailers: under Config.DropRequestTrailers only the
// trailer fields a request's Verdict.Trailers names reach the upstream
// (without regard to case), the others are dropped, and the connection
// goes on with the next request.
func TestDropRequestTrailers(t *testing.T) {
	e := &echo{}
	up := upstream(t, e)
	f := start(t, Config{DropRequestTrailers: true, Handler: handlerFunc(func(_ *Caller, h *h1.Head) Verdict {
		if string(h.Target) == "/keep" {
			return Verdict{Trailers: []string{"X-Sum"}}
		}
		return Verdict{}
	})}, up.Listener.Addr().String(), false)
	c := f.dial()
	br := bufio.NewReader(c)
	const trailers = "0\r\nx-sum: 42\r\nX-Other: 1\r\n\r\n"
	io.WriteString(c, "POST /keep HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum, X-Other\r\n\r\n3\r\nabc\r\n"+trailers)
	resp, body := readResponse(t, br, "POST")
	if body != "POST /keep abc" || resp.Header.Get("X-Got-Trailer-X-Sum") != "42" || resp.Header.Get("X-Got-Trailer-X-Other") != "" {
		t.Errorf("named X-Sum: got %q, header %v; want X-Sum 42 and no X-Other", body, resp.Header)
	}
	io.WriteString(c, "POST /none HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n"+trailers)
	resp, body = readResponse(t, br, "POST")
	if body != "POST /none de" || resp.Header.Get("X-Got-Trailer-X-Sum") != "" || resp.Header.Get("X-Got-Trailer-X-Other") != "" {
		t.Errorf("none named: got %q, header %v; want no trailer field", body, resp.Header)
	}
}
