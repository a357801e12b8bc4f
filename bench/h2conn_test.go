package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
	"github.com/sigil-mesh/sigil/proxy/h2conn"
	"github.com/sigil-mesh/sigil/proxy/hop"
)

// BenchmarkH2Conn is the sidecar-to-sidecar hop under the load of the
// issue's saturation row (64 concurrent requests, 1 KiB answers) over TLS
// 1.3 on loopback, for three transports in the same run: Go's HTTP/2
// (net/http's Transport and Server, what gRPC between sidecars uses
// today), the pooled HTTP/1.1 path (proxy/h1, one connection per request
// in flight) and the multiplexed, write-coalescing proxy/h2conn.
//
// Metrics: req/s; reads/req and writes/req are the read and write calls on
// the TCP connections of both ends together (a counting wrapper under
// TLS); syscr/req and syscw/req are the process's read and write system
// calls from /proc/self/io (both ends, and the reads that found the socket
// empty); cpu-us/req is the process's CPU time (user and system, both
// ends) per request, which a busy machine disturbs far less than req/s;
// x-go-h2 and x-h1 are h2conn's req/s over the other two's, and
// cpu-x-go-h2 and cpu-x-h1 the others' CPU per request over h2conn's.
func BenchmarkH2Conn(b *testing.B) {
	const concurrency = 64
	srvTLS, cliTLS := benchTLS(b)
	payload := strings.Repeat("x", 1024)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, payload)
	})
	rate, cpu := map[string]float64{}, map[string]float64{}
	legs := []struct {
		name  string
		serve func(b *testing.B, ln net.Listener) // serves TLS on ln until the benchmark ends
		rt    func(b *testing.B, dial func(ctx context.Context) (net.Conn, error)) http.RoundTripper
	}{
		{"go-h2", func(b *testing.B, ln net.Listener) {
			cfg := srvTLS.Clone()
			cfg.NextProtos = []string{"h2"}
			srv := &http.Server{Handler: handler, TLSConfig: cfg}
			go srv.Serve(tls.NewListener(ln, cfg))
			b.Cleanup(func() { srv.Close() })
		}, func(b *testing.B, dial func(ctx context.Context) (net.Conn, error)) http.RoundTripper {
			cfg := cliTLS.Clone()
			cfg.NextProtos = []string{"h2"}
			tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }}
			b.Cleanup(tr.CloseIdleConnections)
			return tr
		}},
		{"h1", func(b *testing.B, ln net.Listener) {
			cfg := srvTLS.Clone()
			cfg.NextProtos = []string{"http/1.1"}
			srv := &h1.Server{Handler: handler}
			go acceptLoop(tls.NewListener(ln, cfg), func(c net.Conn) { srv.Serve(context.Background(), c) })
			b.Cleanup(func() { srv.Shutdown(context.Background()) })
		}, func(b *testing.B, dial func(ctx context.Context) (net.Conn, error)) http.RoundTripper {
			cfg := cliTLS.Clone()
			cfg.NextProtos = []string{"http/1.1"}
			cl := &h1.Client{MaxIdle: concurrency, Dial: tlsDial(dial, cfg)}
			b.Cleanup(func() { cl.CloseIdle(true) })
			return cl
		}},
		{"h2conn", func(b *testing.B, ln net.Listener) {
			cfg := srvTLS.Clone()
			cfg.NextProtos = []string{"h2"}
			srv := &h2conn.Server{Handler: handler}
			go acceptLoop(tls.NewListener(ln, cfg), func(c net.Conn) { srv.Serve(context.Background(), c) })
			b.Cleanup(func() { srv.Close() })
		}, func(b *testing.B, dial func(ctx context.Context) (net.Conn, error)) http.RoundTripper {
			cfg := cliTLS.Clone()
			cfg.NextProtos = []string{"h2"}
			cl := &h2conn.Client{Dialer: dialFunc(tlsDial(dial, cfg))}
			b.Cleanup(cl.Close)
			return cl
		}},
	}
	for _, leg := range legs {
		b.Run(leg.name, func(b *testing.B) {
			var cnt connCounts
			ln := listen(b)
			leg.serve(b, countingListener{ln, &cnt})
			addr := ln.Addr().String()
			rt := leg.rt(b, func(ctx context.Context) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, err
				}
				return &countingConn{Conn: c, n: &cnt}, nil
			})
			url := "https://" + addr + "/echo?size=1024"
			hammer(b, rt, url, 64) // warm: connections open, TLS done
			cnt = connCounts{}
			r0, w0 := procIO(b)
			c0 := cpuTime(b)
			b.ResetTimer()
			hammer(b, rt, url, b.N)
			b.StopTimer()
			c1 := cpuTime(b)
			r1, w1 := procIO(b)
			n := float64(b.N)
			rate[leg.name] = n / b.Elapsed().Seconds()
			cpu[leg.name] = float64((c1 - c0).Microseconds()) / n
			b.ReportMetric(rate[leg.name], "req/s")
			b.ReportMetric(cpu[leg.name], "cpu-us/req")
			b.ReportMetric(float64(cnt.reads.Load())/n, "reads/req")
			b.ReportMetric(float64(cnt.writes.Load())/n, "writes/req")
			b.ReportMetric(float64(r1-r0)/n, "syscr/req")
			b.ReportMetric(float64(w1-w0)/n, "syscw/req")
			if leg.name == "h2conn" {
				for _, other := range []string{"go-h2", "h1"} {
					if rate[other] > 0 {
						b.ReportMetric(rate[leg.name]/rate[other], "x-"+other)
						b.ReportMetric(cpu[other]/cpu[leg.name], "cpu-x-"+other)
					}
				}
			}
		})
	}
}

// hammer sends n GET requests through rt from 64 goroutines and checks
// every answer is 200 with 1 KiB.
func hammer(b *testing.B, rt http.RoundTripper, url string, n int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				req, _ := http.NewRequest("GET", url, nil)
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Error(err)
					return
				}
				m, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || m != 1024 {
					b.Errorf("status %d, body of %d bytes", resp.StatusCode, m)
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

type dialFunc func(ctx context.Context) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context) (net.Conn, error) { return f(ctx) }

// tlsDial is dial with a TLS handshake on top.
func tlsDial(dial func(ctx context.Context) (net.Conn, error), cfg *tls.Config) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		return hop.HandshakeTLS(ctx, c, cfg)
	}
}

func acceptLoop(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go serve(c)
	}
}

// benchTLS makes a P-256 certificate for 127.0.0.1 and TLS 1.3 configs
// for a server presenting it and a client trusting it.
func benchTLS(b *testing.B) (srv, cli *tls.Config) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		b.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	srv = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: k}},
		CurvePreferences: []tls.CurveID{tls.CurveP256}}
	cli = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "127.0.0.1",
		CurvePreferences: []tls.CurveID{tls.CurveP256}}
	return srv, cli
}

// connCounts are the read and write calls on connections.
type connCounts struct{ reads, writes atomic.Int64 }

type countingConn struct {
	net.Conn
	n *connCounts
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.n.reads.Add(1)
	return c.Conn.Read(p)
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.n.writes.Add(1)
	return c.Conn.Write(p)
}

type countingListener struct {
	net.Listener
	n *connCounts
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: l.n}, nil
}

// cpuTime is the CPU time the process has used so far, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procIO is the process's read and write system calls so far.
func procIO(b *testing.B) (syscr, syscw int64) {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io:", err)
	}
	for line := range strings.Lines(string(raw)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			syscr = n
		case "syscw":
			syscw = n
		}
	}
	return syscr, syscw
}
