package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

var execCommand = exec.Command

// Result is one scenario on one setup.
type Result struct {
	Scenario string  `json:"scenario"`
	Setup    string  `json:"setup"`
	QPS      float64 `json:"qps"`
	P50ms    float64 `json:"p50_ms"`
	P90ms    float64 `json:"p90_ms"`
	P99ms    float64 `json:"p99_ms"`
	Errors   int64   `json:"errors"`
	Requests int64   `json:"requests"`
	// Per proxy of the pair (client side, server side).
	CPUClientPer1k float64 `json:"cpu_client_cores_per_1k_rps,omitempty"`
	CPUServerPer1k float64 `json:"cpu_server_cores_per_1k_rps,omitempty"`
	RSSClientMB    float64 `json:"rss_client_mb,omitempty"`
	RSSServerMB    float64 `json:"rss_server_mb,omitempty"`
	// Differences against direct in the same run.
	AddedP50ms float64 `json:"added_p50_ms,omitempty"`
	AddedP90ms float64 `json:"added_p90_ms,omitempty"`
	AddedP99ms float64 `json:"added_p99_ms,omitempty"`
	RatioQPS   float64 `json:"qps_ratio_to_direct,omitempty"`
}

type fortioJSON struct {
	ActualQPS         float64
	DurationHistogram struct {
		Count       int64
		Percentiles []struct {
			Percentile float64
			Value      float64
		}
	}
	RetCodes                map[string]int64
	ErrorsDurationHistogram struct{ Count int64 }
}

// fortio runs the load generator and reads its JSON report.
func (e *env) fortio(s *setup, args ...string) (Result, error) {
	out := fmt.Sprintf("%s/fortio-%d.json", e.dir, time.Now().UnixNano())
	full := append([]string{"load", "-json", out, "-p", "50,90,99", "-a=false", "-loglevel", "Error"}, args...)
	if s.host != "" {
		full = append(full, "-H", "Host: "+s.host)
	}
	url := "http://" + s.target + "/echo?size=1024"
	if s.name == "tls:" {
		url = s.target
	}
	full = append(full, url)
	var before [2]int64
	procs := [2]*proc{s.client, s.server}
	for i, p := range procs {
		if p != nil {
			before[i] = cpuTicks(p.pid())
		}
	}
	start := time.Now()
	cmd := execCommand(e.tools+"/fortio", full...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return Result{}, fmt.Errorf("fortio %v: %w: %s", full, err, tail(string(b), 1500))
	}
	elapsed := time.Since(start).Seconds()
	b, err := os.ReadFile(out)
	if err != nil {
		return Result{}, err
	}
	var fj fortioJSON
	if err := json.Unmarshal(b, &fj); err != nil {
		return Result{}, fmt.Errorf("fortio report: %w", err)
	}
	r := Result{Setup: s.name, QPS: fj.ActualQPS, Requests: fj.DurationHistogram.Count}
	for _, p := range fj.DurationHistogram.Percentiles {
		switch p.Percentile {
		case 50:
			r.P50ms = p.Value * 1000
		case 90:
			r.P90ms = p.Value * 1000
		case 99:
			r.P99ms = p.Value * 1000
		}
	}
	for code, n := range fj.RetCodes {
		if code != "200" {
			r.Errors += n
		}
	}
	for i, p := range procs {
		if p == nil {
			continue
		}
		cores := float64(cpuTicks(p.pid())-before[i]) / 100 / elapsed
		per1k := cores / (r.QPS / 1000)
		if i == 0 {
			r.CPUClientPer1k, r.RSSClientMB = per1k, rssMB(p.pid())
		} else {
			r.CPUServerPer1k, r.RSSServerMB = per1k, rssMB(p.pid())
		}
	}
	return r, nil
}

// grpcLoad drives gRPC unary calls (health Check) closed-loop from c
// goroutines over one HTTP/2 connection for d.
func grpcLoad(ctx context.Context, target, authority string, c int, d time.Duration) (Result, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	conn, err := grpc.NewClient("passthrough:///"+target, opts...)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		return Result{}, fmt.Errorf("grpc warm-up via %s: %w", target, err)
	}
	var mu sync.Mutex
	var lat []time.Duration
	var errs int64
	stop := time.Now().Add(d)
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
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000
	}
	return Result{QPS: float64(len(lat)) / d.Seconds(), P50ms: pct(.5), P90ms: pct(.9), P99ms: pct(.99), Errors: errs, Requests: int64(len(lat))}, nil
}

func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
