package h1

import (
	"net/http"
	"testing"
)

// A keep-alive connection reuses its last response for the next request:
// nothing of one exchange (headers, status, framing, close) may show in
// the next one's answer.
func TestKeepAliveResponseReuse(t *testing.T) {
	_, cl, dials := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/first":
			w.Header().Set("X-First", "1")
			w.Header().Set("Content-Type", "text/x-first")
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte("first body"))
		case "/chunked":
			w.Write([]byte("part"))
			w.(http.Flusher).Flush()
			w.Write([]byte(" two"))
		default:
			w.Write([]byte("plain"))
		}
	}))
	tests := []struct {
		path, body, te string
		status         int
	}{
		{"/first", "first body", "", http.StatusAccepted},
		{"/second", "plain", "", http.StatusOK},
		{"/chunked", "part two", "chunked", http.StatusOK},
		{"/third", "plain", "", http.StatusOK},
	}
	for _, tt := range tests {
		resp, body := get(t, cl, "GET", tt.path, nil)
		if resp.StatusCode != tt.status || body != tt.body {
			t.Fatalf("%s: %d %q, want %d %q", tt.path, resp.StatusCode, body, tt.status, tt.body)
		}
		if tt.path != "/first" && (resp.Header.Get("X-First") != "" || resp.Header.Get("Content-Type") == "text/x-first") {
			t.Fatalf("%s: headers of the previous response carried over: %v", tt.path, resp.Header)
		}
		if got := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"; got != (tt.te == "chunked") {
			t.Fatalf("%s: transfer encoding %v, want %q", tt.path, resp.TransferEncoding, tt.te)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections, want the 4 exchanges on one keep-alive connection", n)
	}
}
