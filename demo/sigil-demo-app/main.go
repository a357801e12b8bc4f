// Command sigil-demo-app is the demo and test workload: an HTTP server
// that answers with what it received (method, path, host, headers, and the
// caller's identity from X-Forwarded-Client-Cert), a WebSocket echo on /ws,
// and, with --grpc, the standard gRPC health service (unary Check,
// server-streaming Watch). It knows nothing about the mesh.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

type reply struct {
	Service string            `json:"service"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	URI     string            `json:"uri"` // the request target as received
	Host    string            `json:"host"`
	Caller  string            `json:"caller"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body,omitempty"`
}

// callerOf reads the URI field of an XFCC header (Envoy's format).
func callerOf(xfcc string) string {
	for _, part := range strings.Split(xfcc, ";") {
		if v, ok := strings.CutPrefix(part, "URI="); ok {
			return v
		}
	}
	return ""
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "HOST:PORT to serve on")
	name := flag.String("name", "app", "name to report in replies")
	grpcMode := flag.Bool("grpc", false, "serve the gRPC health service instead of HTTP")
	failEvery := flag.Int("fail-every", 0, "answer 500 to every Nth request (0: never)")
	status := flag.Int("status", 200, "status of every answer (500 makes an unhealthy backend)")
	delay := flag.Duration("delay", 0, "delay every answer by this much")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "sigil-demo-app %s listening on %s\n", *name, ln.Addr())
	if *grpcMode {
		s := grpc.NewServer()
		h := health.NewServer()
		h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(s, h)
		go func() {
			// Flip the status now and then so Watch streams several messages.
			for i := 0; ; i++ {
				time.Sleep(200 * time.Millisecond)
				st := healthpb.HealthCheckResponse_SERVING
				if i%2 == 0 {
					st = healthpb.HealthCheckResponse_NOT_SERVING
				}
				h.SetServingStatus("flapping", st)
			}
		}()
		log.Fatal(s.Serve(ln))
	}
	var requests, shadow, failed atomic.Int64
	mux := http.NewServeMux()
	// /__stats reports what this instance saw (tests count mirrored requests).
	mux.HandleFunc("/__stats", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]int64{"requests": requests.Load(), "shadow": shadow.Load(), "failed": failed.Load()})
	})
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := requests.Add(1)
		if strings.Contains(r.Host, "-shadow") {
			shadow.Add(1)
		}
		if *delay > 0 {
			time.Sleep(*delay)
		}
		// ?delay=1500ms makes a slow request (drain tests, the demo).
		if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil && d > 0 {
			fmt.Fprintf(os.Stderr, "slow request %s for %s\n", r.URL.Path, d)
			select {
			case <-time.After(min(d, time.Minute)):
			case <-r.Context().Done():
				return
			}
		}
		if *status != 200 || (*failEvery > 0 && n%int64(*failEvery) == 0) {
			failed.Add(1)
			code := *status
			if code == 200 {
				code = 500
			}
			http.Error(w, *name+" failed on purpose", code)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		h := map[string]string{}
		for k, v := range r.Header {
			h[k] = strings.Join(v, ",")
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(reply{Service: *name, Method: r.Method, Path: r.URL.Path, URI: r.RequestURI, Host: r.Host,
			Caller: callerOf(r.Header.Get("X-Forwarded-Client-Cert")), Headers: h, Body: string(body)})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(ln))
}
