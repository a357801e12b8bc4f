package upstream

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestDialFollowsRequestContext: a dial marked with its request's context
// (WithRequestCtx, once per connection on the HTTP/1.1 fast path) is not
// made for a request already gone, and is made for one alive.
func TestDialFollowsRequestContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		name    string
		ctx     context.Context
		wantErr error
	}{
		{"request alive", WithRequestCtx(context.Background()), nil},
		{"request gone", WithRequestCtx(gone), context.Canceled},
		{"no request", context.Background(), nil},
	} {
		u := NewConns(prometheus.NewRegistry())
		conn, err := u.Dial(c.ctx, ln.Addr().String())
		if !errors.Is(err, c.wantErr) {
			t.Errorf("%s: dial error %v, want %v", c.name, err, c.wantErr)
		}
		if conn != nil {
			if got := u.open.Load(); got != 1 {
				t.Errorf("%s: %d connections counted open, want 1", c.name, got)
			}
			conn.Close()
			if got := u.open.Load(); got != 0 {
				t.Errorf("%s: %d connections counted open after close, want 0", c.name, got)
			}
		}
	}
}
