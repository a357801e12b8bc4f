package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// grpcBackendEnv, when set to a listen address, makes meshbench the gRPC
// backend instead of the bench: meshbench starts itself this way so that
// the backend is a process of its own, as the HTTP one is.
const grpcBackendEnv = "MESHBENCH_GRPC_BACKEND"

// The streaming service: one bidirectional method that echoes every
// message (a wrapperspb.BytesValue) back on the same stream. Declared
// by hand, so neither side needs generated code.
const echoStreamMethod = "/meshbench.Echo/Stream"

var echoStreamDesc = grpc.StreamDesc{StreamName: "Stream", ServerStreams: true, ClientStreams: true}

var echoService = grpc.ServiceDesc{
	ServiceName: "meshbench.Echo",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{StreamName: "Stream", ServerStreams: true, ClientStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			m := new(wrapperspb.BytesValue)
			for {
				if err := stream.RecvMsg(m); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				if err := stream.SendMsg(m); err != nil {
					return err
				}
			}
		}}},
}

// serveGRPCBackend is the backend process: the standard health service
// (unary Check) and meshbench.Echo/Stream, on addr, until killed.
func serveGRPCBackend(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "meshbench grpc backend listening on %s\n", ln.Addr())
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	s.RegisterService(&echoService, nil)
	return s.Serve(ln)
}

// startGRPCBackend starts meshbench itself as the gRPC backend and sets
// e.grpcBackend to its address.
func (e *env) startGRPCBackend() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	addr := freePort()
	// env(1) execs meshbench in its place: the pid stays the backend's.
	p, err := e.start("grpc-backend", "env", grpcBackendEnv+"="+addr, self)
	if err != nil {
		return err
	}
	if _, err := p.waitLog("grpc backend listening on", 30*time.Second); err != nil {
		return err
	}
	e.grpcBackend = addr
	return nil
}

// grpcDial is the bench's gRPC client connection to target over h2c,
// with :authority set to authority where it is not "". Default options
// otherwise, as real clients run: grpc-go's BDP estimation (a PING per
// round trip while data arrives) stays on, which Sigil's HTTP/2 guard
// once took for a flood (see bench/README.md).
func grpcDial(target, authority string) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	return grpc.NewClient("passthrough:///"+target, opts...)
}

// grpcLoad drives gRPC unary calls (health Check) closed-loop from c
// goroutines over one HTTP/2 connection for d.
func grpcLoad(ctx context.Context, s *setup, c int, d time.Duration) (Result, error) {
	conn, err := grpcDial(s.target, s.host)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		return Result{}, fmt.Errorf("grpc warm-up via %s: %w", s.target, err)
	}
	sample := sampleProcs(s.client, s.server)
	var mu sync.Mutex
	var lat []time.Duration
	var errs int64
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			var localErrs int64
			for time.Now().Before(stop) && len(local) < 2_000_000 {
				t := time.Now()
				if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					localErrs++
					continue
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += localErrs
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := latencyResult(lat, time.Since(start))
	r.Errors, r.Setup = errs, s.name
	sample.finish(&r)
	return r, nil
}

// Streaming load: grpcStreams bidirectional streams on one connection,
// each keeping grpcInFlight messages of grpcMessageBytes in flight (a new
// one sent as each echo comes back), so the load is closed-loop like the
// unary one and the latency of a message is its round trip.
const (
	grpcStreams      = 4
	grpcInFlight     = 16
	grpcMessageBytes = 1024
)

// grpcStreamLoad drives meshbench.Echo/Stream for d and reports messages
// echoed per second (QPS) and their round-trip latency.
func grpcStreamLoad(ctx context.Context, s *setup, d time.Duration) (Result, error) {
	conn, err := grpcDial(s.target, s.host)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	payload := make([]byte, grpcMessageBytes)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Open every stream and echo one message before measuring.
	streams := make([]grpc.ClientStream, grpcStreams)
	for i := range streams {
		st, err := conn.NewStream(ctx, &echoStreamDesc, echoStreamMethod)
		if err != nil {
			return Result{}, fmt.Errorf("grpc stream via %s: %w", s.target, err)
		}
		if err := st.SendMsg(wrapperspb.Bytes(payload)); err != nil {
			return Result{}, fmt.Errorf("grpc stream via %s: %w", s.target, err)
		}
		if err := st.RecvMsg(new(wrapperspb.BytesValue)); err != nil {
			return Result{}, fmt.Errorf("grpc stream via %s: %w", s.target, err)
		}
		streams[i] = st
	}
	sample := sampleProcs(s.client, s.server)
	start := time.Now()
	stop := start.Add(d)
	var mu sync.Mutex
	var lat []time.Duration
	var errs atomic.Int64
	var firstErr atomic.Value
	failed := func(err error) {
		if errs.Add(1) == 1 {
			firstErr.Store(fmt.Errorf("%.1fs into the run: %w", time.Since(start).Seconds(), err))
		}
	}
	var wg sync.WaitGroup
	for _, st := range streams {
		slots := make(chan struct{}, grpcInFlight)
		for range grpcInFlight {
			slots <- struct{}{}
		}
		sent := make(chan time.Time, grpcInFlight)
		msg := wrapperspb.Bytes(payload)
		wg.Add(2)
		go func() { // sender: a message per free slot until stop
			defer wg.Done()
			defer close(sent)
			for time.Now().Before(stop) {
				<-slots
				sent <- time.Now()
				if err := st.SendMsg(msg); err != nil {
					failed(fmt.Errorf("send: %w", err))
					return
				}
			}
			st.CloseSend()
		}()
		go func() { // receiver: each echo frees its slot
			defer wg.Done()
			var local []time.Duration
			m := new(wrapperspb.BytesValue)
			for t := range sent {
				if err := st.RecvMsg(m); err != nil {
					failed(fmt.Errorf("receive: %w", err))
					cancel() // unblocks the sender's SendMsg
					for range sent {
						slots <- struct{}{}
					}
					break
				}
				local = append(local, time.Since(t))
				slots <- struct{}{}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := latencyResult(lat, time.Since(start))
	r.Errors, r.Setup = errs.Load(), s.name
	sample.finish(&r)
	if err, ok := firstErr.Load().(error); ok {
		log.Printf("grpc stream via %s: %d errors, the first: %v", s.name, r.Errors, err)
	}
	return r, nil
}

// latencyResult is a closed-loop run's throughput over its elapsed time
// d and its latency percentiles.
func latencyResult(lat []time.Duration, d time.Duration) Result {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000
	}
	return Result{QPS: float64(len(lat)) / d.Seconds(), P50ms: pct(.5), P90ms: pct(.9), P99ms: pct(.99), Requests: int64(len(lat))}
}
