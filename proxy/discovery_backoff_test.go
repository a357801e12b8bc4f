package proxy

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/internal/backoff"
)

// retryLog sends the retry_in of every log record that has one.
type retryLog struct {
	slog.Handler
	waits chan time.Duration
}

func (h *retryLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *retryLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "retry_in" {
			d, _ := time.ParseDuration(a.Value.String())
			select {
			case h.waits <- d:
			default:
			}
		}
		return true
	})
	return nil
}

// TestDiscoveryReconnectsOnTheBackoffSchedule: with the agent away, the
// sidecar reconnects on the one backoff schedule (internal/backoff), not
// on constants of its own.
func TestDiscoveryReconnectsOnTheBackoffSchedule(t *testing.T) {
	h := &retryLog{Handler: slog.DiscardHandler, waits: make(chan time.Duration, 8)}
	p := &Proxy{cfg: &checked{Config: Config{Socket: filepath.Join(t.TempDir(), "no-agent.sock"), Service: "web"}}, log: slog.New(h)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); p.discover(ctx, nil, "127.0.0.1:15006") }()
	var waits []time.Duration
	for len(waits) < 3 {
		select {
		case w := <-h.waits:
			waits = append(waits, w)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d reconnects in 10 s, want 3", len(waits))
		}
	}
	cancel()
	<-done
	for i, w := range waits {
		want := min(backoff.Initial<<i, backoff.Max)
		if w < want/2 || w > want {
			t.Errorf("reconnect %d after %s, want within [%s, %s]", i, w, want/2, want)
		}
	}
}
