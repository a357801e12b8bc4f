package bench

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// BenchmarkHTTP1Exchange is one keep-alive HTTP/1.1 request and its 1 KiB
// response over loopback, through the sidecar's lean path (proxy/h1:
// its own head parsing and writing, one goroutine per connection) and,
// as the baseline in the same run, through net/http's Transport and
// Server. The x-net-http metric is h1's time per exchange over net/http's.
func BenchmarkHTTP1Exchange(b *testing.B) {
	payload := strings.Repeat("x", 1024)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, payload)
	})
	newReq := func(addr string) *http.Request {
		req, _ := http.NewRequest("GET", "http://"+addr+"/echo?size=1024", nil)
		req.Header.Set("User-Agent", "bench")
		req.Header.Set("X-Request-Id", "0123456789abcdef")
		return req
	}
	exchange := func(b *testing.B, rt http.RoundTripper, addr string) {
		b.Helper()
		req := newReq(addr)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		if n, _ := io.Copy(io.Discard, resp.Body); n != 1024 {
			b.Fatalf("body of %d bytes", n)
		}
		resp.Body.Close()
	}
	var perOp [2]time.Duration
	b.Run("net-http", func(b *testing.B) {
		ln := listen(b)
		srv := &http.Server{Handler: handler}
		go srv.Serve(ln)
		defer srv.Close()
		tr := &http.Transport{MaxIdleConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		b.ReportAllocs()
		for b.Loop() {
			exchange(b, tr, ln.Addr().String())
		}
		perOp[0] = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("h1", func(b *testing.B) {
		ln := listen(b)
		srv := &h1.Server{Handler: handler}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go srv.Serve(context.Background(), c)
			}
		}()
		defer srv.Shutdown(context.Background())
		addr := ln.Addr().String()
		cl := &h1.Client{MaxIdle: 1, Dial: func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}}
		defer cl.CloseIdle(true)
		b.ReportAllocs()
		for b.Loop() {
			exchange(b, cl, addr)
		}
		perOp[1] = b.Elapsed() / time.Duration(b.N)
		if perOp[0] > 0 {
			b.ReportMetric(float64(perOp[1])/float64(perOp[0]), "x-net-http")
		}
	})
}

func listen(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return ln
}
