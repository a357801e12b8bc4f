package bench

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sigil-mesh/sigil/proxy/h2conn"
	"github.com/sigil-mesh/sigil/proxy/hop"
)

// BenchmarkH2ConnRelay is h2conn where a sidecar uses it, with the
// process's CPU per request (cpu-us/req: all ends and the load
// generator, which a busy machine disturbs less than req/s):
//
//   - grpc-unary: a gRPC unary call's shape (POST of a 5-byte-framed
//     message without Content-Length; answer: HEADERS, one DATA, trailers
//     with grpc-status) from a client through a relay (an h2conn server
//     whose handler sends the request on with an h2conn client and copies
//     the answer back with hop.CopyResponse, as the sidecar's outbound
//     does) to an h2conn server, 16 calls in flight on one connection,
//     as meshbench's grpc-unary row;
//   - body-64KiB and body-1MiB: answers of that size, written 32 KiB at a
//     time as the sidecar's response copy writes them, over one TLS
//     connection, 16 requests in flight (MB/s as well); the 1 MiB answer
//     also with the client's stream window (Limits.StreamWindow) at 1 and
//     4 MiB instead of the default 256 KiB.
//
// Legs are chosen with -bench 'H2ConnRelay/grpc' and so on; compare two
// builds by running their test binaries alternately (bench/README.md).
func BenchmarkH2ConnRelay(b *testing.B) {
	srvTLS, cliTLS := benchTLS(b)
	b.Run("grpc-unary", func(b *testing.B) {
		msg := make([]byte, 5+32)
		binary.BigEndian.PutUint32(msg[1:], 32)
		backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			h := w.Header()
			h.Set("Content-Type", "application/grpc")
			h.Set("Trailer", "Grpc-Status")
			w.WriteHeader(http.StatusOK)
			w.Write(msg)
			h.Set("Grpc-Status", "0")
		})
		next := h2Client(b, serveH2(b, srvTLS, backend), cliTLS)
		relay := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			out := r.Clone(r.Context())
			out.URL.Scheme, out.URL.Host, out.RequestURI = "https", r.Host, ""
			resp, err := next.RoundTrip(out)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			hop.CopyResponse(w, resp)
		})
		addr := serveH2(b, srvTLS, relay)
		cl := h2Client(b, addr, cliTLS)
		call := func() error {
			req, _ := http.NewRequest("POST", "https://"+addr+"/grpc.health.v1.Health/Check", &onceReader{p: msg})
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			resp, err := cl.RoundTrip(req)
			if err != nil {
				return err
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || n != int64(len(msg)) || resp.Trailer.Get("Grpc-Status") != "0" {
				b.Errorf("status %d, %d bytes, grpc-status %q", resp.StatusCode, n, resp.Trailer.Get("Grpc-Status"))
			}
			return nil
		}
		measure(b, 16, call, 0)
	})
	for _, leg := range []struct {
		size   int
		window int32 // the client's stream window (0: h2conn's default)
	}{{64 << 10, 0}, {1 << 20, 0}, {1 << 20, 1 << 20}, {1 << 20, 4 << 20}} {
		size := leg.size
		name := "body-" + strconv.Itoa(size>>10) + "KiB"
		if size >= 1<<20 {
			name = "body-" + strconv.Itoa(size>>20) + "MiB"
		}
		if leg.window > 0 {
			name += "-window-" + strconv.Itoa(int(leg.window>>10)) + "KiB"
		}
		b.Run(name, func(b *testing.B) {
			chunk := make([]byte, 32<<10)
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for range size / len(chunk) {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			})
			addr := serveH2(b, srvTLS, handler)
			cl := h2Client(b, addr, cliTLS)
			cl.Limits.StreamWindow = leg.window
			bufs := sync.Pool{New: func() any { return new([32 << 10]byte) }}
			call := func() error {
				req, _ := http.NewRequest("GET", "https://"+addr+"/big", nil)
				resp, err := cl.RoundTrip(req)
				if err != nil {
					return err
				}
				buf := bufs.Get().(*[32 << 10]byte)
				n, _ := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, buf[:])
				bufs.Put(buf)
				resp.Body.Close()
				if n != int64(size) {
					b.Errorf("body of %d bytes, want %d", n, size)
				}
				return nil
			}
			measure(b, 16, call, size)
		})
	}
}

// measure runs call b.N times from inflight goroutines (after a warm-up
// round) and reports req/s, cpu-us/req and, for size > 0, MB/s.
func measure(b *testing.B, inflight int, call func() error, size int) {
	run := func(n int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range inflight {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if err := call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
	}
	run(inflight)
	c0 := cpuTime(b)
	b.ResetTimer()
	run(b.N)
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(n/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(float64((cpuTime(b)-c0).Microseconds())/n, "cpu-us/req")
	if size > 0 {
		b.ReportMetric(n*float64(size)/1e6/b.Elapsed().Seconds(), "MB/s")
	}
}

// serveH2 serves handler with h2conn over TLS on a new loopback listener
// until the benchmark ends, and returns its address.
func serveH2(b *testing.B, srvTLS *tls.Config, handler http.Handler) string {
	ln := listen(b)
	cfg := srvTLS.Clone()
	cfg.NextProtos = []string{"h2"}
	srv := &h2conn.Server{Handler: handler}
	go acceptLoop(tls.NewListener(ln, cfg), func(c net.Conn) { srv.Serve(context.Background(), c) })
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// h2Client is an h2conn client of addr over TLS.
func h2Client(b *testing.B, addr string, cliTLS *tls.Config) *h2conn.Client {
	cfg := cliTLS.Clone()
	cfg.NextProtos = []string{"h2"}
	dial := func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", addr) }
	cl := &h2conn.Client{Dialer: dialFunc(tlsDial(dial, cfg))}
	b.Cleanup(cl.Close)
	return cl
}

// onceReader is a request body of unknown length (as a relayed gRPC
// message's): p, then EOF.
type onceReader struct {
	p    []byte
	done bool
}

func (r *onceReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	r.done = true
	return copy(p, r.p), io.EOF
}
