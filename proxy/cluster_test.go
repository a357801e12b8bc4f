package proxy

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
	p := newPool(&traffic.TrafficPolicy{ConnectionPool: &traffic.ConnectionPool{
		TCP: &traffic.TCPSettings{MaxConnections: 1}, HTTP: &traffic.HTTPSettings{HTTP1MaxPendingRequests: 1},
	}})
	ctx := context.Background()
	release, err := p.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		r, err := p.acquire(ctx) // waits: the one pending place
		if err == nil {
			r()
		}
		waited <- err
	}()
	for p.pending.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	if _, err := p.acquire(ctx); !errors.As(err, &overflowError{}) {
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
	p := newPool(nil)
	var dones []func()
	for p.canRetry() {
		dones = append(dones, p.startRetry())
	}
	if len(dones) != minRetryConcurrent {
		t.Fatalf("with nothing in flight %d retries allowed, want %d", len(dones), minRetryConcurrent)
	}
	p.active.Store(100)
	for p.canRetry() {
		dones = append(dones, p.startRetry())
	}
	if len(dones) != 20 {
		t.Fatalf("with 100 in flight %d retries allowed, want 20", len(dones))
	}
	for _, d := range dones {
		d()
	}
	capped := newPool(&traffic.TrafficPolicy{ConnectionPool: &traffic.ConnectionPool{HTTP: &traffic.HTTPSettings{MaxRetries: 1}}})
	capped.startRetry()
	if capped.canRetry() {
		t.Fatal("maxRetries 1 allowed a second retry")
	}
}

func TestOutlierEjection(t *testing.T) {
	eps := []*endpoint{{addr: "a"}, {addr: "b"}, {addr: "c"}, {addr: "d"}}
	c := &cluster{eps: eps, outlier: outlierOf(&traffic.TrafficPolicy{OutlierDetection: &traffic.OutlierDetection{
		Consecutive5xxErrors: i32(2), MaxEjectionPercent: i32(50), BaseEjectionTime: &traffic.Duration{Duration: time.Minute},
	}}), rr: new(atomic.Uint64), lb: lbRoundRobin}
	if c.record(eps[0], 500, false) {
		t.Fatal("ejected after one error")
	}
	c.record(eps[0], 200, false) // a success resets the streak
	c.record(eps[0], 500, false)
	if !c.record(eps[0], 503, false) || !eps[0].ejected(time.Now()) {
		t.Fatal("not ejected after two errors in a row")
	}
	c.record(eps[1], 500, false)
	if !c.record(eps[1], 500, true) {
		t.Fatal("second endpoint not ejected (50% of 4 allows 2)")
	}
	c.record(eps[2], 500, false)
	if c.record(eps[2], 500, false) {
		t.Fatal("a third endpoint ejected beyond maxEjectionPercent")
	}
	for range 20 {
		if e := c.pick(nil, ""); e == eps[0] || e == eps[1] {
			t.Fatalf("picked ejected endpoint %s", e.addr)
		}
	}
	// Every endpoint ejected: use them all rather than none (panic mode).
	all := &cluster{eps: eps[:2], rr: new(atomic.Uint64), lb: lbRoundRobin}
	if all.pick(nil, "") == nil {
		t.Fatal("no endpoint in panic mode")
	}
}

func TestPeakEWMAPrefersFastEndpoint(t *testing.T) {
	fast, slow := &endpoint{addr: "fast"}, &endpoint{addr: "slow"}
	now := time.Now()
	for range 5 {
		fast.observe(time.Millisecond, now)
		slow.observe(50*time.Millisecond, now)
	}
	c := &cluster{eps: []*endpoint{fast, slow}, rr: new(atomic.Uint64), lb: lbPeakEWMA}
	n := 0
	for range 100 {
		if c.pick(nil, "") == fast {
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
		e := &endpoint{addr: "a", ejections: tt.prior, ejectedUntil: now.Add(-tt.backFor)}
		c := &cluster{eps: []*endpoint{e, {addr: "b"}}, clock: func() time.Time { return now }, outlier: outlierOf(&traffic.TrafficPolicy{OutlierDetection: &traffic.OutlierDetection{
			Consecutive5xxErrors: i32(1), MaxEjectionPercent: i32(100), Interval: &traffic.Duration{Duration: 10 * time.Second},
			BaseEjectionTime: &traffic.Duration{Duration: tt.base},
		}}), rr: new(atomic.Uint64), lb: lbRoundRobin}
		if !c.record(e, 500, false) {
			t.Errorf("%s: not ejected", tt.name)
			continue
		}
		out := e.ejectedUntil.Sub(now)
		if out < tt.wantAtLst || out > tt.wantAtMst+10*time.Second {
			t.Errorf("%s: ejected for %v, want %v to %v", tt.name, out, tt.wantAtLst, tt.wantAtMst+10*time.Second)
		}
	}
}
