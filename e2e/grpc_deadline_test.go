package e2e

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// slowHealth answers Check after delay, paying no attention to the
// caller's deadline: a slow server.
type slowHealth struct {
	healthpb.UnimplementedHealthServer
	delay time.Duration
}

func (s slowHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	time.Sleep(s.delay)
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// A gRPC call whose deadline passes in the mesh fails with
// DEADLINE_EXCEEDED, never UNAVAILABLE, whichever sidecar or step it is
// in when the deadline passes; and the sidecars themselves answer
// DEADLINE_EXCEEDED at the caller's deadline (grpc-timeout) rather than
// waiting for a slow server.
func TestGRPCDeadlineStatus(t *testing.T) {
	t.Parallel()
	const delay = 300 * time.Millisecond
	ids := startIdentities(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, slowHealth{delay: delay})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	rpc := harness.StartProxy(t, ids.grpc, "grpc", ln.Addr().String(), ids.policyDir)
	_, webApp := harness.StartApp(t, "web")
	web := harness.StartProxy(t, ids.web, "web", webApp, ids.policyDir, "--upstream", "grpc="+rpc.Inbound+"@"+grpcSA)

	conn, err := grpc.NewClient("passthrough:///"+web.Outbound, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc:50051"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	// Warm up: the path works and is connected.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("warm-up Check: %v", err)
	}
	cancel()

	// Many calls with short deadlines, around and below the server's delay.
	const calls, workers = 150, 6
	codesSeen := map[codes.Code]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan time.Duration, calls)
	for range calls {
		next <- time.Duration(1+rand.IntN(int(delay/time.Millisecond)+100)) * time.Millisecond
	}
	close(next)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range next {
				ctx, cancel := context.WithTimeout(context.Background(), d)
				_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
				cancel()
				mu.Lock()
				codesSeen[status.Code(err)]++
				if err != nil && status.Code(err) != codes.DeadlineExceeded {
					t.Errorf("deadline %v: %v, want DeadlineExceeded", d, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if codesSeen[codes.DeadlineExceeded] == 0 {
		t.Fatalf("no call ran out of time: %v", codesSeen)
	}
	t.Logf("codes: %v", codesSeen)

	// A caller that leaves the deadline to the mesh (no timer of its own,
	// only grpc-timeout, as a proxy in front of it would send) gets
	// DEADLINE_EXCEEDED from the sidecars at its deadline.
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	for _, timeout := range []string{"1m", "50m", "150m"} {
		req, _ := http.NewRequest("POST", "http://"+web.Outbound+"/grpc.health.v1.Health/Check", bytes.NewReader([]byte{0, 0, 0, 0, 0}))
		req.Host = "grpc"
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		req.Header.Set("Grpc-Timeout", timeout)
		start := time.Now()
		resp, err := h2c.RoundTrip(req)
		if err != nil {
			t.Fatalf("grpc-timeout %s: %v", timeout, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		st := resp.Trailer.Get("Grpc-Status")
		if st == "" {
			st = resp.Header.Get("Grpc-Status")
		}
		if st != "4" || took >= delay {
			t.Errorf("grpc-timeout %s: grpc-status %q after %v, want 4 before the server's %v", timeout, st, took, delay)
		}
	}
}
