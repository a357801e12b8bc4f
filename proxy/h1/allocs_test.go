package h1

import (
	"bufio"
	"io"
	"net/http"
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

// A keep-alive exchange through the client and the server, both in this
// process: the client's body wrapper shares the parsed response's
// allocation (a body of its own before session 26), and neither side
// changes a deadline it need not (deadline_test.go).
func TestRequestPathAllocationsExchange(t *testing.T) {
	const maxAllocs = 13
	payload := strings.Repeat("x", 1024)
	_, cl, _ := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, payload) }))
	req, err := http.NewRequest(http.MethodGet, "http://svc/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	exchange := func() {
		resp, err := cl.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.ReadFull(resp.Body, buf[:len(payload)])
		resp.Body.Close()
		if n != len(payload) {
			t.Fatalf("body: %d bytes", n)
		}
	}
	exchange()
	if n := testing.AllocsPerRun(200, exchange); n > maxAllocs {
		t.Errorf("%.1f allocations per exchange (client and server), want at most %d", n, maxAllocs)
	} else {
		t.Logf("%.1f allocations per exchange", n)
	}
}
