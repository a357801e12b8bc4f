package leader

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// candidate is one replica under test: its elector and the changes it
// reported.
type candidate struct {
	e       *Elector
	changes chan change
	cancel  context.CancelFunc
	done    chan struct{}
}

type change struct {
	leading bool
	leader  string
}

func start(t *testing.T, client *fake.Clientset, pod, addr string) *candidate {
	t.Helper()
	c := &candidate{changes: make(chan change, 64), done: make(chan struct{})}
	e, err := New(Config{
		Leases: client.CoordinationV1(), Namespace: "sigil-system", Identity: Identity(pod, addr),
		LeaseDuration: 1200 * time.Millisecond, RenewDeadline: 800 * time.Millisecond, RetryPeriod: 100 * time.Millisecond,
		OnChange: func(leading bool, leader string) { c.changes <- change{leading, leader} },
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.e = e
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { defer close(c.done); e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

// await waits for a change that ok accepts, failing after within.
func (c *candidate) await(t *testing.T, within time.Duration, what string, ok func(change) bool) time.Duration {
	t.Helper()
	begin := time.Now()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case ch := <-c.changes:
			if ok(ch) {
				return time.Since(begin)
			}
		case <-timer.C:
			t.Fatalf("%s: not within %s", what, within)
		}
	}
}

func leading(ch change) bool { return ch.leading }

// waitLeading is closed when c reports that it leads.
func waitLeading(c *candidate) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for {
			select {
			case ch := <-c.changes:
				if ch.leading {
					close(done)
					return
				}
			case <-c.done: // the candidate stopped: this waiter ends with it
				return
			}
		}
	}()
	return done
}

// TestLeaderHandover covers the ways signing moves between replicas: a
// leader that stops cleanly releases the Lease and another leads at once;
// a leader that cannot renew the Lease steps down by its renew deadline,
// before another may lead; followers learn the leader's agent API
// address from the Lease.
func TestLeaderHandover(t *testing.T) {
	t.Run("clean stop releases the lease", func(t *testing.T) {
		client := fake.NewClientset()
		a := start(t, client, "server-a", "10.0.0.1:8081")
		a.await(t, 5*time.Second, "a leads", leading)
		b := start(t, client, "server-b", "10.0.0.2:8081")
		b.await(t, 5*time.Second, "b sees a lead", func(ch change) bool { return !ch.leading && ch.leader == a.e.Identity() })
		if addr, ok := Address(b.e.Leader()); !ok || addr != "10.0.0.1:8081" {
			t.Fatalf("follower's leader address %q, %v", addr, ok)
		}
		if !a.e.IsLeader() || b.e.IsLeader() {
			t.Fatalf("IsLeader: a %v, b %v", a.e.IsLeader(), b.e.IsLeader())
		}
		a.cancel()
		<-a.done
		if a.e.IsLeader() {
			t.Fatal("a stopped and still says it leads")
		}
		// Released: b need not wait for the lease to run out.
		took := b.await(t, 5*time.Second, "b leads after a's release", leading)
		if took > time.Second {
			t.Fatalf("b led %s after a released the lease, want under the lease duration", took)
		}
	})
	t.Run("a leader that cannot renew steps down", func(t *testing.T) {
		client := fake.NewClientset()
		// Installed before any elector runs: the fake's reactor chain is
		// not safe to change while in use.
		var cut atomic.Bool
		client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
			if cut.Load() {
				return true, nil, errors.New("api server unreachable")
			}
			return false, nil, nil
		})
		a := start(t, client, "server-a", "10.0.0.1:8081")
		a.await(t, 5*time.Second, "a leads", leading)
		b := start(t, client, "server-b", "10.0.0.2:8081")
		b.await(t, 5*time.Second, "b sees a lead", func(ch change) bool { return ch.leader == a.e.Identity() })
		cut.Store(true)
		stepped := a.await(t, 5*time.Second, "a steps down", func(ch change) bool { return !ch.leading })
		if stepped > 1200*time.Millisecond {
			t.Fatalf("a stepped down after %s, past the lease duration", stepped)
		}
		if a.e.IsLeader() || b.e.IsLeader() {
			t.Fatal("a replica says it leads while no one can renew the lease")
		}
		cut.Store(false)
		select {
		case <-waitLeading(a):
		case <-waitLeading(b):
		case <-time.After(5 * time.Second):
			t.Fatal("no replica leads once the lease can be written again")
		}
	})
}

func TestLeaderConfig(t *testing.T) {
	client := fake.NewClientset()
	cases := []struct {
		name string
		cfg  Config
	}{
		{"no identity", Config{Leases: client.CoordinationV1(), Namespace: "ns"}},
		{"no namespace", Config{Leases: client.CoordinationV1(), Identity: "a_b:1"}},
		{"renew deadline past lease", Config{Leases: client.CoordinationV1(), Namespace: "ns", Identity: "a_b:1", LeaseDuration: time.Second, RenewDeadline: 2 * time.Second}},
		{"retry past renew deadline", Config{Leases: client.CoordinationV1(), Namespace: "ns", Identity: "a_b:1", RenewDeadline: time.Second, RetryPeriod: 2 * time.Second}},
	}
	for _, tc := range cases {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, ok := Address("server-a"); ok {
		t.Error("Address of an identity without an address: ok")
	}
}
