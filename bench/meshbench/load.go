package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"
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
	// System calls per request (per message for a stream) per proxy of
	// the pair, from /proc/<pid>/io: syscr (reads) and syscw (writes).
	ReadsClient  float64 `json:"syscalls_read_client_per_request,omitempty"`
	WritesClient float64 `json:"syscalls_write_client_per_request,omitempty"`
	ReadsServer  float64 `json:"syscalls_read_server_per_request,omitempty"`
	WritesServer float64 `json:"syscalls_write_server_per_request,omitempty"`
	// The syscall census: client side, server side (census.go).
	Census []censusSide `json:"syscall_census,omitempty"`
	// The scaling curve's point: connections and response bytes.
	Conns     int `json:"connections,omitempty"`
	RespBytes int `json:"response_bytes,omitempty"`
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

// fortio runs the load generator against s's /echo with 1 KiB responses
// and reads its JSON report.
func (e *env) fortio(s *setup, args ...string) (Result, error) {
	return e.fortioSized(s, 1024, args...)
}

// fortioSized is fortio with responses of size bytes.
func (e *env) fortioSized(s *setup, size int, args ...string) (Result, error) {
	out := fmt.Sprintf("%s/fortio-%d.json", e.dir, time.Now().UnixNano())
	full := append([]string{"load", "-json", out, "-p", "50,90,99", "-a=false", "-loglevel", "Error"}, args...)
	if s.host != "" {
		full = append(full, "-H", "Host: "+s.host)
	}
	url := "http://" + s.target + "/echo?size=" + strconv.Itoa(size)
	if s.name == "tls:" {
		url = s.target
	}
	full = append(full, url)
	sample := sampleProcs(s.client, s.server)
	cmd := execCommand(e.tools+"/fortio", full...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return Result{}, fmt.Errorf("fortio %v: %w: %s", full, err, tail(string(b), 1500))
	}
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
	sample.finish(&r)
	return r, nil
}

func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
