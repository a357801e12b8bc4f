package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// writeCalls is the write system calls process pid has made so far
// (syscw of /proc/<pid>/io).
func writeCalls(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Skipf("no /proc/<pid>/io here: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("/proc/%d/io: syscw %q: %v", pid, v, err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/io has no syscw", pid)
	return 0
}

// The frames of concurrent gRPC calls leave each sidecar in shared writes,
// on the app's side too: the caller's sidecar serves the app's h2c, and
// the callee's sends to its app, with h2conn's coalescing writer, as
// between the sidecars. Go's HTTP/2 server and transport, there before,
// wrote and flushed frame by frame: meshbench counted 5.8 and 5.0 write
// calls per unary call on the caller's and callee's sidecar, and this
// test 0.7 and 3.4 (race-built binaries, so calls queue up more); the
// coalescing writer makes 0.3-0.4 on each (bench/README.md, "gRPC unary:
// where the CPU per call goes").
func TestGRPCFramesShareWritesOnEverySide(t *testing.T) {
	t.Parallel()
	mp := startMeshWithProxies(t)
	client := webHealthClient(t, mp)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("warm-up Check: %v", err)
	}
	const callers, calls = 16, 200
	webBefore, rpcBefore := writeCalls(t, mp.web.PID()), writeCalls(t, mp.rpc.PID())
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Check: %v", err)
	}
	n := float64(callers * calls)
	web := float64(writeCalls(t, mp.web.PID())-webBefore) / n
	rpc := float64(writeCalls(t, mp.rpc.PID())-rpcBefore) / n
	t.Logf("write calls per unary call: caller's sidecar %.2f, callee's %.2f", web, rpc)
	// Between Go's 5 and the coalescing writer's ~0.3-1: a margin for a
	// quiet machine, where fewer calls wait to share a write.
	const most = 2.5
	if web > most || rpc > most {
		t.Fatalf("write calls per unary call: caller's sidecar %.2f, callee's %.2f; want ≤ %.1f each (frames of concurrent calls share writes)", web, rpc, most)
	}
}
