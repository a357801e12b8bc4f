package e2e

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFaultAroundBoundedOnTheExecutable: a sidecar cuts its executable's
// read-only mappings into pages (--fault-around-bytes, default 4096), so
// under load it keeps a fraction of the file-backed memory of one that
// leaves them whole (--fault-around-bytes 0), where every page fault maps
// 64 KiB of code and tables. web's sidecar cuts them, api's does not;
// api's runs more code (policy, audit export), so the comparison is loose:
// measured 5.7 against 17.3 MB at 1000 rps (bench/README.md, Memory), 8.2
// against 17.2 MB here with -race binaries at 50 rps, and ~16 MB for both
// before.
func TestFaultAroundBoundedOnTheExecutable(t *testing.T) {
	p := startReportingPair(t, nil, "--fault-around-bytes", "0")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: p.web.Outbound})}}
	defer client.CloseIdleConnections()
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := client.Get("http://api/hello")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("web never reached api: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	done := make(chan []sample)
	go func() { done <- generate(t, p.web.Outbound, 50, 5*time.Second) }()
	time.Sleep(4 * time.Second) // under load: a quiet sidecar gives pages back
	web, api := rssFileKB(t, p.web.PID()), rssFileKB(t, p.api.PID())
	webMax, apiMax := largestExecMapping(t, p.web.PID()), largestExecMapping(t, p.api.PID())
	f := figures(<-done, time.Time{}, time.Now().Add(time.Minute))
	t.Logf("file-backed RSS under load (%d requests, %d failed): web (cut) %d kB, api (whole) %d kB; largest read-only mapping of the executable %d and %d bytes", f.requests, f.failures, web, api, webMax, apiMax)
	if f.requests-f.failures < 100 {
		t.Fatalf("load: %d requests, %d failed", f.requests, f.failures)
	}
	if webMax > 4096 {
		t.Errorf("web's sidecar has a read-only mapping of its executable of %d bytes; want pages (4096)", webMax)
	}
	if apiMax <= 4096 {
		t.Errorf("api's sidecar (--fault-around-bytes 0) cut its executable's mappings too (largest %d bytes)", apiMax)
	}
	if web*10 > api*6 {
		t.Errorf("file-backed RSS: web %d kB with its executable cut, api %d kB with it whole; want under 0.6 of it", web, api)
	}
}

// rssFileKB is a process's file-backed resident memory (RssFile), in kB.
func rssFileKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatalf("no RssFile in /proc/%d/status", pid)
	return 0
}

// largestExecMapping is the size of the largest read-only mapping of a
// process's executable, in bytes.
func largestExecMapping(t *testing.T, pid int) uint64 {
	t.Helper()
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	var largest uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 6 || f[5] != exe || (f[1] != "r-xp" && f[1] != "r--p") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil {
			largest = max(largest, e-s)
		}
	}
	return largest
}
