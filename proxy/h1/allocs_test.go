package h1

import (
	"bufio"
	"strings"
	"testing"
)

// The fast path parses a common head (HTTP/1.1, a plain target, a handful
// of header lines, Content-Length) in a fixed number of allocations: the
// head's string, the parsed request or response (which holds the header's
// values too), and the header map. Before session 25 the values were a
// slice of their own: one more per head.
func TestRequestPathAllocationsParseHead(t *testing.T) {
	const maxAllocs = 4
	req := "GET /echo?size=1024 HTTP/1.1\r\nHost: api\r\nUser-Agent: fortio.org/fortio-1.69\r\nAccept: */*\r\nX-B3-Traceid: 1\r\nX-Request-Id: 2\r\n\r\n"
	resp := "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nDate: Mon, 30 Nov 2026 17:00:00 GMT\r\nContent-Length: 4\r\nServer: x\r\n\r\nbody"
	br := bufio.NewReader(strings.NewReader(""))
	reqHead, respHead := []byte(req), []byte(resp[:len(resp)-4])
	tests := []struct {
		name  string
		parse func() bool
	}{
		{"request", func() bool { return parseRequest(reqHead, br, nil) != nil }},
		{"response", func() bool { return parseResponse(respHead, br, nil) != nil }},
	}
	for _, tt := range tests {
		if !tt.parse() {
			t.Fatalf("%s: not parsed on the fast path", tt.name)
		}
		if n := testing.AllocsPerRun(200, func() { tt.parse() }); n > maxAllocs {
			t.Errorf("%s: %.0f allocations per head, want at most %d", tt.name, n, maxAllocs)
		}
	}
}
