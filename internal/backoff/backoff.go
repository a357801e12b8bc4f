// Package backoff is Sigil's one retry schedule for reconnects and retried
// calls between its parts: jittered exponential, doubling from Initial up to
// Max. Max is a few seconds, so a server or agent that comes back is reached
// within that time rather than after a long doubling (gRPC's own channel
// backoff climbs to 120 s; go-spiffe's Workload API client to 30 s).
//
// Typical use:
//
//	var b backoff.Backoff
//	for ctx.Err() == nil {
//		if err := call(ctx); err == nil {
//			b.Reset()
//			continue
//		}
//		b.Wait(ctx, wake)
//	}
package backoff

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// The schedule: the first retry waits about Initial, each next one twice
// as long, never more than Max. Each wait is drawn uniformly from its upper
// half ([d/2, d]) so that nodes cut off together do not retry together.
const (
	Initial = 500 * time.Millisecond
	Max     = 5 * time.Second
)

// Backoff is one retry sequence. The zero value is ready to use; it is not
// safe for concurrent use (each loop owns its own).
type Backoff struct {
	cur time.Duration
}

// Next returns the wait before the next attempt and advances the sequence.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = Initial
	}
	d := b.cur
	b.cur = min(b.cur*2, Max)
	return d/2 + rand.N(d/2+1)
}

// Reset starts the sequence over, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Wait waits Next(), or less if ctx is done or wake (which may be nil)
// fires: a wake means something changed that makes a retry worth trying at
// once (a new credential, a server known to be back). It reports whether
// ctx is still live.
func (b *Backoff) Wait(ctx context.Context, wake <-chan struct{}) bool {
	return Sleep(ctx, b.Next(), wake)
}

// Sleep waits d (a wait Next returned, for a loop that logs it first), or
// less if ctx is done or wake (which may be nil) fires. It reports whether
// ctx is still live.
func Sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-t.C:
	}
	return true
}

// GRPCConnectParams is the same schedule for a gRPC channel's reconnects,
// for grpc.WithConnectParams.
func GRPCConnectParams() grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff: grpcbackoff.Config{
			BaseDelay:  Initial,
			Multiplier: 2,
			Jitter:     0.2,
			MaxDelay:   Max,
		},
		MinConnectTimeout: 5 * time.Second,
	}
}
