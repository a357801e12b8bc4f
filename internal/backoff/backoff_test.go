package backoff

import (
	"context"
	"testing"
	"time"
)

func TestBackoffSchedule(t *testing.T) {
	var b Backoff
	want := []time.Duration{Initial, 2 * Initial, 4 * Initial, 8 * Initial, Max, Max, Max}
	for i, w := range want {
		w = min(w, Max)
		if got := b.Next(); got < w/2 || got > w {
			t.Fatalf("wait %d = %s, want within [%s, %s]", i, got, w/2, w)
		}
	}
	b.Reset()
	if got := b.Next(); got > Initial {
		t.Fatalf("after Reset wait %s, want at most %s", got, Initial)
	}
	if p := GRPCConnectParams(); p.Backoff.MaxDelay != Max || p.Backoff.BaseDelay != Initial {
		t.Fatalf("gRPC params %+v", p)
	}
}

func TestBackoffWaitWakes(t *testing.T) {
	var b Backoff
	for range 5 {
		b.Next() // climb to Max
	}
	wake := make(chan struct{})
	close(wake)
	start := time.Now()
	if !b.Wait(context.Background(), wake) {
		t.Fatal("Wait reported a done context")
	}
	if time.Since(start) > time.Second {
		t.Fatal("Wait did not return on wake")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if b.Wait(ctx, nil) {
		t.Fatal("Wait reported a live context after cancel")
	}
}
