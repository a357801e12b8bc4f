package proxy

import (
	"net/http/httptest"
	"testing"

	"github.com/sigil-mesh/sigil/traffic"
)

// headers.request.set (or add) of host or :authority replaces the
// authority sent upstream, as Envoy does; it never becomes a header field
// (Go's transport would ignore a Host field, and refuse ":authority").
func TestAuthorityHeaderOperation(t *testing.T) {
	tests := []struct {
		name string
		ops  traffic.HeaderOperations
		want string
	}{
		{"set host", traffic.HeaderOperations{Set: map[string]string{"host": "a.example"}}, "a.example"},
		{"set :authority", traffic.HeaderOperations{Set: map[string]string{":authority": "b.example:8080"}}, "b.example:8080"},
		{"add Host", traffic.HeaderOperations{Add: map[string]string{"Host": "c.example"}}, "c.example"},
		{"other headers only", traffic.HeaderOperations{Set: map[string]string{"x-a": "1"}}, "api"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "http://api/x", nil)
		hs := &traffic.Headers{Request: &tt.ops}
		applyHeaders(r.Header, hs, true)
		setAuthority(r, hs)
		if r.Host != tt.want {
			t.Errorf("%s: Host %q, want %q", tt.name, r.Host, tt.want)
		}
		for k := range r.Header {
			if traffic.IsAuthorityHeader(k) {
				t.Errorf("%s: header field %q sent", tt.name, k)
			}
		}
	}
	// On a response, host is an ordinary field (validation refuses it).
	h := httptest.NewRecorder().Header()
	applyHeaders(h, &traffic.Headers{Response: &traffic.HeaderOperations{Set: map[string]string{"x-b": "2"}}}, false)
	if h.Get("X-B") != "2" {
		t.Fatalf("response header not set: %v", h)
	}
}
