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
