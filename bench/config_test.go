package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// simProxies are simulated sidecars: real Discovery clients of the agents'
// sockets that register an endpoint, and record when each configuration
// version reaches them (and acknowledge it, as a sidecar does).
type simProxies struct {
	mu   sync.Mutex
	seen map[int64]int       // version → how many proxies have it
	last map[int64]time.Time // version → when the last one got it
	wake chan struct{}
}

func (s *simProxies) run(ctx context.Context, b *testing.B, socket string, i int, ready *sync.WaitGroup) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Error(err)
		return
	}
	defer conn.Close()
	stream, err := proxyv1.NewDiscoveryClient(conn).Stream(ctx)
	if err != nil {
		b.Error(err)
		return
	}
	stream.Send(&proxyv1.DiscoveryRequest{Msg: &proxyv1.DiscoveryRequest_Register{Register: &proxyv1.Register{
		Service: "svc" + strconv.Itoa(i%20), Address: fmt.Sprintf("127.0.%d.%d:15006", i/250, i%250+1), Labels: map[string]string{"version": "v1"},
	}}})
	first := true
	for {
		msg, err := stream.Recv()
		if err != nil {
			return
		}
		if !msg.GetDelta().GetComplete() {
			continue // the rest of this change follows
		}
		v := msg.GetDelta().GetVersion()
		now := time.Now()
		s.mu.Lock()
		s.seen[v]++
		s.last[v] = now
		close(s.wake)
		s.wake = make(chan struct{})
		s.mu.Unlock()
		stream.Send(&proxyv1.DiscoveryRequest{Msg: &proxyv1.DiscoveryRequest_Ack{Ack: &proxyv1.Ack{ConfigVersion: v}}})
		if first {
			ready.Done()
			first = false
		}
	}
}

// waitVersion waits until n proxies have version v and returns when the
// last one got it.
func (s *simProxies) waitVersion(b *testing.B, v int64, n int) time.Time {
	deadline := time.After(60 * time.Second)
	for {
		s.mu.Lock()
		got, at, wake := s.seen[v], s.last[v], s.wake
		s.mu.Unlock()
		if got >= n {
			return at
		}
		select {
		case <-wake:
		case <-deadline:
			b.Fatalf("version %d reached %d of %d proxies", v, got, n)
		}
	}
}

// BenchmarkApplyToAllProxies measures the time from `sigil apply` (the
// admin API call) to the new configuration reaching every one of 200
// sidecars, spread over 4 agents (simulated sidecars: real Discovery
// clients). Baseline in the same run: one admin API round trip.
func BenchmarkApplyToAllProxies(b *testing.B) {
	const agents, perAgent = 4, 50
	m := harness.StartMesh(b)
	sockets := make([]string, agents)
	for i := range agents {
		node := "node" + strconv.Itoa(i)
		args := []string{"--selector", "unix:uid:" + strconv.Itoa(os.Getuid())}
		for s := range 20 {
			args = append(args, "--service", "svc"+strconv.Itoa(s))
		}
		m.Entry(node, "spiffe://example.org/ns/bench/sa/sim", args...)
		sockets[i] = m.StartAgent(node).Socket
	}
	sim := &simProxies{seen: map[int64]int{}, last: map[int64]time.Time{}, wake: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	var ready, done sync.WaitGroup
	for i := range agents * perAgent {
		ready.Add(1)
		done.Add(1)
		go func() { defer done.Done(); sim.run(ctx, b, sockets[i%agents], i, &ready) }()
	}
	b.Cleanup(func() { cancel(); done.Wait() })
	ready.Wait()
	admin := adminv1.NewAdminClient(adminv1.AdminSocket(m.DataDir))
	var rtt time.Duration
	for range 20 {
		start := time.Now()
		admin.ListProxies(ctx)
		rtt += time.Since(start)
	}
	rtt /= 20
	b.ResetTimer()
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		vs := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc0}
spec:
  hosts: [svc0]
  http:
  - timeout: %dms
    route: [{destination: {host: svc0}}]
`, 1000+i)
		start := time.Now()
		resp, err := admin.Apply(ctx, []adminv1.File{{Name: "bench.yaml", Content: vs}}, false)
		if err != nil {
			b.Fatal(err)
		}
		total += sim.waitVersion(b, resp.Version, agents*perAgent).Sub(start)
	}
	perApply := total / time.Duration(b.N)
	b.ReportMetric(float64(perApply.Microseconds())/1000, "ms/apply-to-all-200")
	b.ReportMetric(float64(rtt.Microseconds())/1000, "ms/admin-rtt")
	b.ReportMetric(float64(perApply)/float64(rtt), "x-admin-rtt")
}
