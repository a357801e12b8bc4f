//go:build linux

package loop

import (
	"io"
	"net"
	"net/http"
	"testing"
)

// TestExpectEarlyAnswerCloses: an upstream's final answer to a request
// that waits for 100 Continue, before any 100 reached the caller, ends
// the caller's connection (Connection: close), as proxy/h1's server
// does: the caller may never send the body it announced, and reading
// its next request as that body would take one request for another's
// bytes. After a 100 the body comes, and the connection goes on.
func TestExpectEarlyAnswerCloses(t *testing.T) {
	early := rawUpstream(t, func(c net.Conn) {
		eachRequest(c, func(req *http.Request) bool {
			if req.URL.Path == "/continue" {
				io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
				io.ReadAll(req.Body)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return true
			}
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n") // the body never read
			return false
		})
	})
	f := start(t, Config{}, early, false)
	c := f.caller()
	if _, err := io.WriteString(c.c, "POST /continue HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := readResponse(t, c.br, "POST"); resp.StatusCode != 100 {
		t.Fatalf("want 100 Continue first: %d", resp.StatusCode)
	}
	io.WriteString(c.c, "abc")
	if resp, body := readResponse(t, c.br, "POST"); resp.StatusCode != 200 || body != "ok" || resp.Close {
		t.Fatalf("after a 100: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	// The body held back, the answer final: the connection ends.
	if _, err := io.WriteString(c.c, "POST /early HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 16\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, _ := readResponse(t, c.br, "POST")
	if resp.StatusCode != 503 || !resp.Close {
		t.Fatalf("early answer: %d, close=%v; want 503 and Connection: close", resp.StatusCode, resp.Close)
	}
	io.WriteString(c.c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	expectEOF(t, c.br)
}
