package relay

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/internal/backoff"
)

// reportTimes runs r.Report with a send that always fails, calling
// during(i) inside the i-th call (from 1), and returns when the first
// three calls were made.
func reportTimes(t *testing.T, r *Relay, during func(i int)) []time.Time {
	t.Helper()
	calls := make(chan time.Time, 8)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	n := 0
	go func() {
		defer close(done)
		r.Report(ctx, time.Hour, func(context.Context, []*agentv1.Proxy) error {
			n++
			during(n)
			calls <- time.Now()
			return errors.New("server away")
		})
	}()
	r.markDirty()
	var at []time.Time
	for len(at) < 3 {
		select {
		case c := <-calls:
			at = append(at, c)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d reports in 10 s, want 3", len(at))
		}
	}
	cancel()
	<-done
	return at
}

// TestReportRetriesOnTheBackoffSchedule: a report the server does not take
// is retried on the one backoff schedule (first within Initial, then
// doubling), not on a constant of its own.
func TestReportRetriesOnTheBackoffSchedule(t *testing.T) {
	at := reportTimes(t, New(nil, nil, slog.New(slog.DiscardHandler)), func(int) {})
	first, second := at[1].Sub(at[0]), at[2].Sub(at[1])
	// Scheduling only ever adds to a wait; the bounds leave it 400 ms.
	if first < backoff.Initial/2 || first > backoff.Initial+400*time.Millisecond {
		t.Errorf("first retry after %s, want within [%s, %s] (backoff.Initial)", first, backoff.Initial/2, backoff.Initial)
	}
	if second < backoff.Initial {
		t.Errorf("second retry after %s, want at least %s (the wait doubles)", second, backoff.Initial)
	}
}

// TestReportRetriesAtOnceWhenTheServerIsReachable: once the server answers
// on another stream, a failed report does not wait out its backoff (the
// server would expire the node's endpoints meanwhile).
func TestReportRetriesAtOnceWhenTheServerIsReachable(t *testing.T) {
	r := New(nil, nil, slog.New(slog.DiscardHandler))
	at := reportTimes(t, r, func(i int) {
		if i == 2 {
			r.ServerReachable() // the Sync stream got through meanwhile
		}
	})
	if gap := at[2].Sub(at[1]); gap >= backoff.Initial/2 {
		t.Fatalf("report retried %s after the server was reachable again, want at once (under %s, the shortest backoff wait)", gap, backoff.Initial/2)
	}
}
