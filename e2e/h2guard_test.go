package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// streamingHealth answers Check at once (for service "slow", after a
// second or the call's end) and streams watchMessages Watch answers as
// fast as the stream takes them: a busy server.
type streamingHealth struct {
	healthpb.UnimplementedHealthServer
}

const watchMessages = 100

func (streamingHealth) Check(ctx context.Context, r *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if r.GetService() == "slow" {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (streamingHealth) Watch(_ *healthpb.HealthCheckRequest, s grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	m := &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}
	for range watchMessages {
		if err := s.Send(m); err != nil {
			return err
		}
	}
	return nil
}

// frameCountingConn counts the HTTP/2 frames a client writes and reads,
// by type, by following the 9-byte frame headers.
type frameCountingConn struct {
	net.Conn
	out, in frameTally
}

type frameTally struct {
	mu    sync.Mutex
	skip  int // the client preface, on the way out
	hdr   [9]byte
	hdrN  int
	left  int
	count [16]int
}

func (t *frameTally) follow(b []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(b) > 0 {
		switch {
		case t.skip > 0:
			k := min(t.skip, len(b))
			t.skip -= k
			b = b[k:]
		case t.left > 0:
			k := min(t.left, len(b))
			t.left -= k
			b = b[k:]
		default:
			k := copy(t.hdr[t.hdrN:], b)
			t.hdrN += k
			b = b[k:]
			if t.hdrN == len(t.hdr) {
				t.hdrN = 0
				t.left = int(t.hdr[0])<<16 | int(t.hdr[1])<<8 | int(t.hdr[2])
				// PINGs and SETTINGS are counted without their ACKs.
				if typ := http2.FrameType(t.hdr[3]); int(typ) < len(t.count) && !((typ == http2.FramePing || typ == http2.FrameSettings) && t.hdr[4]&0x1 != 0) {
					t.count[typ]++
				}
			}
		}
	}
}

func (t *frameTally) n(typ http2.FrameType) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count[typ]
}

func (c *frameCountingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.follow(p[:n])
	return n, err
}

func (c *frameCountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.follow(p[:n])
	return n, err
}

// grpcMesh is a grpc-go server behind its sidecar, and a grpc-go client
// with default options calling it through web's sidecar; the client's
// connections count the frames that pass.
type grpcMesh struct {
	web, rpc *harness.ProxyProc
	client   healthpb.HealthClient
	mu       sync.Mutex
	conns    []*frameCountingConn
}

// startGRPCMesh starts the mesh; flags go to both sidecars.
func startGRPCMesh(t *testing.T, flags ...string) *grpcMesh {
	ids := startIdentities(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, streamingHealth{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	m := &grpcMesh{rpc: harness.StartProxy(t, ids.grpc, "grpc", ln.Addr().String(), ids.policyDir, flags...)}
	_, webApp := harness.StartApp(t, "web")
	m.web = harness.StartProxy(t, ids.web, "web", webApp, ids.policyDir, append([]string{"--upstream", "grpc=" + m.rpc.Inbound + "@" + grpcSA}, flags...)...)
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		fc := &frameCountingConn{Conn: c, out: frameTally{skip: len(http2.ClientPreface)}}
		m.mu.Lock()
		m.conns = append(m.conns, fc)
		m.mu.Unlock()
		return fc, nil
	}
	// Default options: only the transport (h2c) and the authority are set.
	conn, err := grpc.NewClient("passthrough:///"+m.web.Outbound, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("grpc:50051"), grpc.WithContextDialer(dial))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	m.client = healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("warm-up Check: %v", err)
	}
	return m
}

// sent and received count the frames of a type on the client's
// connections (PING and SETTINGS without their ACKs).
func (m *grpcMesh) sent(typ http2.FrameType) int { return m.count(typ, true) }

func (m *grpcMesh) received(typ http2.FrameType) int { return m.count(typ, false) }

func (m *grpcMesh) count(typ http2.FrameType, out bool) (n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		if out {
			n += c.out.n(typ)
		} else {
			n += c.in.n(typ)
		}
	}
	return n
}

// noneCutOff fails the test if the client got a GOAWAY or either sidecar
// closed an HTTP/2 connection for abuse.
func (m *grpcMesh) noneCutOff(t *testing.T) {
	t.Helper()
	if n := m.received(http2.FrameGoAway); n != 0 {
		t.Errorf("the client got %d GOAWAYs", n)
	}
	for _, admin := range []string{m.web.Admin, m.rpc.Admin} {
		if n := metricValue(t, admin, `^sigil_http2_connections_closed_total\{`); n != 0 {
			t.Errorf("%s closed %v HTTP/2 connections for abuse", admin, n)
		}
	}
}

// A grpc-go client with default options (BDP estimation on: a PING per
// round trip while data arrives) streaming and calling through both
// sidecars is never taken for a flood: no GOAWAY, no failed call, though
// it sends far more PINGs than --http2-max-control-frames allows a
// connection that makes no progress. The limit is lowered to 20 per
// 10 s, and the calls go on until the client has sent three times that
// within some 10 s (so more than the limit in one of the counter's
// windows, which are 10 s long and follow each other), or for at most
// 90 s: how fast the client sends PINGs depends on the machine's load
// (~65 a second under -race on 2 busy cores; ~20 at a load average of
// 14, once the caller's sidecar served the app's h2c with h2conn and
// coalesced its PING ACKs with the calls' frames), so the test waits for
// the count rather than for a rate.
func TestHTTP2GuardSparesGRPCDefaultClient(t *testing.T) {
	t.Parallel()
	const limit = 20
	m := startGRPCMesh(t, "--http2-max-control-frames", strconv.Itoa(limit))
	client := m.client
	ctx := context.Background()

	const wantPings, span = 3 * limit, 10 * time.Second
	pings := func() int { return m.sent(http2.FramePing) }
	burst := frameBurst{span: span}
	run, stop := context.WithTimeout(ctx, 90*time.Second)
	defer stop()
	var calls, failed, messages atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for run.Err() == nil {
				s, err := client.Watch(run, &healthpb.HealthCheckRequest{})
				if err != nil {
					if run.Err() == nil {
						failed.Add(1)
						t.Errorf("Watch: %v", err)
					}
					return
				}
				for {
					if _, err := s.Recv(); err != nil {
						if run.Err() == nil && !errors.Is(err, io.EOF) {
							failed.Add(1)
							t.Errorf("Watch after %d messages: %v", messages.Load(), err)
						}
						break
					}
					messages.Add(1)
				}
			}
		}()
	}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for run.Err() == nil {
				_, err := client.Check(run, &healthpb.HealthCheckRequest{})
				if run.Err() != nil {
					return
				}
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					t.Errorf("Check after %d calls: %v", calls.Load(), err)
				}
			}
		}()
	}
	burst.await(run, pings, wantPings)
	stop()
	wg.Wait()

	t.Logf("client: %d PINGs sent (at most %d within %v), %d unary calls, %d streamed messages",
		pings(), burst.most, span, calls.Load(), messages.Load())
	if n := failed.Load(); n != 0 {
		t.Errorf("%d failed calls; want none", n)
	}
	m.noneCutOff(t)
	if burst.most < wantPings {
		t.Errorf("the client sent at most %d PINGs within %v in 90 s, want %d (BDP estimation off?)", burst.most, span, wantPings)
	}
}

// frameBurst is the most frames counted within any span of time, from
// samples of a running count.
type frameBurst struct {
	span    time.Duration
	samples []frameSample
	most    int
}

type frameSample struct {
	at time.Time
	n  int
}

// await samples count every 50 ms until the most counted within span
// reaches want or run ends.
func (b *frameBurst) await(run context.Context, count func() int, want int) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for b.add(time.Now(), count()) < want {
		select {
		case <-run.Done():
			return
		case <-tick.C:
		}
	}
}

// add records the count n at time at and returns the most counted
// within span so far (n less the earliest sample not older than span).
func (b *frameBurst) add(at time.Time, n int) int {
	b.samples = append(b.samples, frameSample{at, n})
	for len(b.samples) > 1 && at.Sub(b.samples[0].at) > b.span {
		b.samples = b.samples[1:]
	}
	b.most = max(b.most, n-b.samples[0].n)
	return b.most
}

// A grpc-go client one of whose calls in four runs into its deadline
// (grpc-go resets the stream with RST_STREAM CANCEL; the caller's
// sidecar resets its own stream to the callee's) is served through both
// sidecars, though it resets far more streams than --http2-max-resets
// allows a connection that resets every stream it opens: the calls that
// end well earn the resets (Envoy's rule: at most half reset). The limit
// is lowered to 20 per 10 s, and the calls go on until the client has
// reset three times that within some 10 s (more than the limit in one
// of the counter's windows), or for at most 90 s: how fast it resets
// depends on the machine's load (179 in 30 s at a load average of 30,
// where 600 in 30 s were once required), so the test waits for the
// count rather than for a rate.
func TestHTTP2GuardSparesGRPCClientWithDeadlines(t *testing.T) {
	t.Parallel()
	const limit = 20
	m := startGRPCMesh(t, "--http2-max-resets", strconv.Itoa(limit))
	const wantResets, span = 3 * limit, 10 * time.Second
	resets := func() int { return m.sent(http2.FrameRSTStream) }
	burst := frameBurst{span: span}
	run, stop := context.WithTimeout(context.Background(), 90*time.Second)
	defer stop()
	var calls, failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for run.Err() == nil {
				i := calls.Add(1)
				req, d, want := &healthpb.HealthCheckRequest{}, 5*time.Second, codes.OK
				if i%4 == 0 {
					req.Service, d, want = "slow", 5*time.Millisecond, codes.DeadlineExceeded
				}
				ctx, cancel := context.WithTimeout(run, d)
				_, err := m.client.Check(ctx, req)
				cancel()
				if got := status.Code(err); got != want && run.Err() == nil {
					failed.Add(1)
					t.Errorf("call %d: %v, want %v", i, err, want)
				}
			}
		}()
	}
	burst.await(run, resets, wantResets)
	stop()
	wg.Wait()
	t.Logf("client: %d calls, %d RST_STREAMs sent (at most %d within %v)", calls.Load(), resets(), burst.most, span)
	if n := failed.Load(); n != 0 {
		t.Errorf("%d calls failed otherwise than by their deadline", n)
	}
	m.noneCutOff(t)
	if burst.most < wantResets {
		t.Errorf("the client reset at most %d streams within %v in 90 s, want %d", burst.most, span, wantResets)
	}
}

// rawH2C opens an HTTP/2 (prior knowledge) connection to addr and sends
// the preface and SETTINGS; the framer reads and writes synchronously,
// as the test says.
func rawH2C(t *testing.T, addr string) (net.Conn, *bufio.Writer, *http2.Framer) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	bw := bufio.NewWriter(c)
	fr := http2.NewFramer(bw, bufio.NewReader(c))
	bw.WriteString(http2.ClientPreface)
	fr.WriteSettings()
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return c, bw, fr
}

// readUntil reads frames until done says stop, and returns the GOAWAY
// code if one came first (ok false if neither came in 15 s).
func readUntil(t *testing.T, c net.Conn, fr *http2.Framer, done func(http2.Frame) bool) (code http2.ErrCode, goAway bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read: %v (no GOAWAY)", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return ga.ErrCode, true
		}
		if done(f) {
			return 0, false
		}
	}
}

// PING floods with no request on the connection are closed with GOAWAY
// ENHANCE_YOUR_CALM whether or not the client reads the ACKs: neither
// earns a control frame (no HEADERS or DATA either way), so both run out
// of --http2-max-control-frames. Go's server alone closes only the one
// that leaves its ACKs unread (10,000 queued), and that without GOAWAY.
func TestHTTP2PingFloodIsClosed(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	web := harness.StartProxy(t, ids.web, "web", "127.0.0.1:1", ids.policyDir)
	closes := func() float64 {
		return metricValue(t, web.Admin, `^sigil_http2_connections_closed_total\{listener="outbound",reason="control_frame_flood"\}`)
	}
	wantClosed := func(t *testing.T, code http2.ErrCode, goAway bool, before float64) {
		t.Helper()
		if !goAway || code != http2.ErrCodeEnhanceYourCalm {
			t.Errorf("GOAWAY %v (got one: %v), want ENHANCE_YOUR_CALM", code, goAway)
		}
		if n := closes(); n != before+1 {
			t.Errorf("control-flood closes counted: %v, want %v", n, before+1)
		}
	}
	t.Run("never reads the ACKs", func(t *testing.T) {
		before := closes()
		c, bw, fr := rawH2C(t, web.Outbound)
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for i := range 20000 {
			if fr.WritePing(false, [8]byte{byte(i)}) != nil || (i%100 == 99 && bw.Flush() != nil) {
				break
			}
		}
		bw.Flush()
		code, goAway := readUntil(t, c, fr, func(http2.Frame) bool { return false })
		wantClosed(t, code, goAway, before)
	})
	t.Run("reads each ACK before the next PING", func(t *testing.T) {
		before := closes()
		c, bw, fr := rawH2C(t, web.Outbound)
		var code http2.ErrCode
		closed := false
		for i := 0; i < 5000 && !closed; i++ {
			data := [8]byte{byte(i), byte(i >> 8)}
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if fr.WritePing(false, data) != nil || bw.Flush() != nil {
				t.Fatalf("write failed after %d PINGs without GOAWAY", i)
			}
			code, closed = readUntil(t, c, fr, func(f http2.Frame) bool {
				p, ok := f.(*http2.PingFrame)
				return ok && p.IsAck() && p.Data == data
			})
		}
		wantClosed(t, code, closed, before)
	})
}

// A client that sends requests, each with control frames around it as
// browsers and gRPC clients do (a PRIORITY for the stream, a PING to time
// the round trip, a SETTINGS), is served to the end however many it
// sends: each request and each answer earns the frames around it.
func TestHTTP2GuardSparesControlFramesBetweenRequests(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	_, apiApp := harness.StartApp(t, "api")
	api := harness.StartProxy(t, ids.api, "api", apiApp, ids.policyDir)
	web := harness.StartProxy(t, ids.web, "web", "127.0.0.1:1", ids.policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA)
	waitServed(t, web.Outbound, 30*time.Second)

	c, bw, fr := rawH2C(t, web.Outbound)
	// Room on the connection for every answer (a stream's own window
	// holds one).
	fr.WriteWindowUpdate(0, 1<<30)
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	// 3 control frames per request: 1500 requests are 4500, over four
	// times --http2-max-control-frames.
	const requests = 1500
	for i := range requests {
		stream := uint32(2*i + 1)
		hbuf.Reset()
		for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "api"}, {":path", "/hello"}} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
		fr.WritePriority(stream, http2.PriorityParam{Weight: 15})
		fr.WritePing(false, [8]byte{byte(i)})
		fr.WriteSettings()
		if err := bw.Flush(); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if code, goAway := readUntil(t, c, fr, func(f http2.Frame) bool {
			return f.Header().StreamID == stream && f.Header().Flags.Has(http2.FlagDataEndStream)
		}); goAway {
			t.Fatalf("GOAWAY %v after %d requests", code, i)
		}
	}
	if n := metricValue(t, web.Admin, `^sigil_http2_connections_closed_total\{`); n != 0 {
		t.Errorf("closed %v HTTP/2 connections for abuse", n)
	}
}
