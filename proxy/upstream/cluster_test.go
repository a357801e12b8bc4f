package upstream

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/traffic"
)

func i32(n int32) *int32 { return &n }

func TestPoolOverflow(t *testing.T) {
	p := NewPool(&traffic.TrafficPolicy{ConnectionPool: &traffic.ConnectionPool{
		TCP: &traffic.TCPSettings{MaxConnections: 1}, HTTP: &traffic.HTTPSettings{HTTP1MaxPendingRequests: 1},
	}})
	ctx := context.Background()
	release, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		r, err := p.Acquire(ctx) // waits: the one pending place
		if err == nil {
			r()
		}
		waited <- err
	}()
	for p.pending.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	if _, err := p.Acquire(ctx); !errors.As(err, &OverflowError{}) {
		t.Fatalf("third request: %v, want overflow", err)
	}
	release()
	if err := <-waited; err != nil {
		t.Fatalf("pending request: %v", err)
	}
	if p.active.Load() != 0 {
		t.Fatalf("active %d after all released", p.active.Load())
	}
}

func TestRetryBudget(t *testing.T) {
	p := NewPool(nil)
	var dones []func()
	for p.CanRetry() {
		dones = append(dones, p.StartRetry())
	}
	if len(dones) != minRetryConcurrent {
		t.Fatalf("with nothing in flight %d retries allowed, want %d", len(dones), minRetryConcurrent)
	}
	p.active.Store(100)
	for p.CanRetry() {
		dones = append(dones, p.StartRetry())
	}
	if len(dones) != 20 {
		t.Fatalf("with 100 in flight %d retries allowed, want 20", len(dones))
	}
	for _, d := range dones {
		d()
	}
	capped := NewPool(&traffic.TrafficPolicy{ConnectionPool: &traffic.ConnectionPool{HTTP: &traffic.HTTPSettings{MaxRetries: 1}}})
	capped.StartRetry()
	if capped.CanRetry() {
		t.Fatal("maxRetries 1 allowed a second retry")
	}
}

func TestOutlierEjection(t *testing.T) {
	eps := []*Endpoint{{Addr: "a"}, {Addr: "b"}, {Addr: "c"}, {Addr: "d"}}
	c := &Cluster{Eps: eps, outlier: outlierOf(&traffic.TrafficPolicy{OutlierDetection: &traffic.OutlierDetection{
		Consecutive5xxErrors: i32(2), MaxEjectionPercent: i32(50), BaseEjectionTime: &traffic.Duration{Duration: time.Minute},
	}}), rr: new(atomic.Uint64), lb: lbRoundRobin}
	if c.Record(eps[0], 500, false) {
		t.Fatal("ejected after one error")
	}
	c.Record(eps[0], 200, false) // a success resets the streak
	c.Record(eps[0], 500, false)
	if !c.Record(eps[0], 503, false) || !eps[0].ejected(time.Now()) {
		t.Fatal("not ejected after two errors in a row")
	}
	c.Record(eps[1], 500, false)
	if !c.Record(eps[1], 500, true) {
		t.Fatal("second endpoint not ejected (50% of 4 allows 2)")
	}
	c.Record(eps[2], 500, false)
	if c.Record(eps[2], 500, false) {
		t.Fatal("a third endpoint ejected beyond maxEjectionPercent")
	}
	for range 20 {
		if e := c.Pick(nil, ""); e == eps[0] || e == eps[1] {
			t.Fatalf("picked ejected endpoint %s", e.Addr)
		}
	}
	// Every endpoint ejected: use them all rather than none (panic mode).
	all := &Cluster{Eps: eps[:2], rr: new(atomic.Uint64), lb: lbRoundRobin}
	if all.Pick(nil, "") == nil {
		t.Fatal("no endpoint in panic mode")
	}
}

func TestPeakEWMAPrefersFastEndpoint(t *testing.T) {
	fast, slow := &Endpoint{Addr: "fast"}, &Endpoint{Addr: "slow"}
	now := time.Now()
	for range 5 {
		fast.Observe(time.Millisecond, now)
		slow.Observe(50*time.Millisecond, now)
	}
	c := &Cluster{Eps: []*Endpoint{fast, slow}, rr: new(atomic.Uint64), lb: lbPeakEWMA}
	n := 0
	for range 100 {
		if c.Pick(nil, "") == fast {
			n++
		}
	}
	if n != 100 {
		t.Fatalf("fast endpoint picked %d of 100 times", n)
	}
}

// TestOutlierEjectionTimeBounded: an endpoint ejected for the nth time is
// out for baseEjectionTime × n, capped at Envoy's max_ejection_time
// default (300s, or baseEjectionTime when longer), never overflowing into
// the past; the multiplier goes down by one per interval the endpoint
// spends back in the pool (Envoy's rule).
func TestOutlierEjectionTimeBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		base      time.Duration
		prior     int           // ejections before this one
		backFor   time.Duration // how long the endpoint has been back
		wantAtLst time.Duration // ejected at least this long
		wantAtMst time.Duration // and at most this long (plus one interval)
	}{
		{"first", 30 * time.Second, 0, time.Hour, 30 * time.Second, 30 * time.Second},
		{"third, right back", 30 * time.Second, 2, 0, 90 * time.Second, 90 * time.Second},
		{"fiftieth: capped at 300s", 30 * time.Second, 49, 0, 300 * time.Second, 300 * time.Second},
		{"base above 300s: capped at base", time.Hour, 5, 0, time.Hour, time.Hour},
		{"absurd base: no overflow", 2000000 * time.Hour, 2, 0, 2000000 * time.Hour, 2000000 * time.Hour},
		{"back for 2 intervals: multiplier down by 2", 30 * time.Second, 4, 20 * time.Second, 90 * time.Second, 90 * time.Second},
	}
	for _, tt := range tests {
		e := &Endpoint{Addr: "a", ejections: tt.prior, ejectedUntil: now.Add(-tt.backFor)}
		c := &Cluster{Eps: []*Endpoint{e, {Addr: "b"}}, clock: func() time.Time { return now }, outlier: outlierOf(&traffic.TrafficPolicy{OutlierDetection: &traffic.OutlierDetection{
			Consecutive5xxErrors: i32(1), MaxEjectionPercent: i32(100), Interval: &traffic.Duration{Duration: 10 * time.Second},
			BaseEjectionTime: &traffic.Duration{Duration: tt.base},
		}}), rr: new(atomic.Uint64), lb: lbRoundRobin}
		if !c.Record(e, 500, false) {
			t.Errorf("%s: not ejected", tt.name)
			continue
		}
		out := e.ejectedUntil.Sub(now)
		if out < tt.wantAtLst || out > tt.wantAtMst+10*time.Second {
			t.Errorf("%s: ejected for %v, want %v to %v", tt.name, out, tt.wantAtLst, tt.wantAtMst+10*time.Second)
		}
	}
}

// Every request takes a pool slot and gives it back: neither may allocate
// (a release closure per request did, before session 26), with or without
// a cap on requests in flight.
func TestRequestPathAllocationsPoolAcquire(t *testing.T) {
	capped := &traffic.TrafficPolicy{ConnectionPool: &traffic.ConnectionPool{TCP: &traffic.TCPSettings{MaxConnections: 4}}}
	for name, p := range map[string]*Pool{"default": NewPool(nil), "capped": NewPool(capped)} {
		ctx := context.Background()
		n := testing.AllocsPerRun(100, func() {
			release, err := p.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			release()
		})
		if n != 0 {
			t.Errorf("%s: %.1f allocations per request's slot, want 0", name, n)
		}
		if p.active.Load() != 0 || len(p.slots) != 0 {
			t.Errorf("%s: %d active, %d slots taken after every release", name, p.active.Load(), len(p.slots))
		}
	}
}
