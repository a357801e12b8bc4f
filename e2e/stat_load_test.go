package e2e

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// reportingPair is web calling api over real sidecars on two nodes, whose
// sidecars and agents report golden metrics every second.
type reportingPair struct {
	m                  *harness.Mesh
	webAgent, apiAgent *harness.AgentProc
	web, api           *harness.ProxyProc
}

// startReportingPair starts a reportingPair, api's app with apiApp flags
// and its sidecar with apiProxy flags besides.
func startReportingPair(t *testing.T, apiApp []string, apiProxy ...string) reportingPair {
	t.Helper()
	p := reportingPair{m: harness.StartMesh(t)}
	p.m.Entry("node1", webSA, "--selector", "unix:uid:"+myUID)
	p.m.Entry("node2", apiSA, "--selector", "unix:uid:"+myUID)
	every := []string{"--stats-interval", "1s"}
	p.webAgent, p.apiAgent = p.m.StartAgent("node1", every...), p.m.StartAgent("node2", every...)
	dir := filepath.Join(p.m.Dir, "policy")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(webToAPIPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	_, webAddr := harness.StartApp(t, "web")
	_, apiAddr := harness.StartApp(t, "api", apiApp...)
	p.api = harness.StartProxy(t, p.apiAgent, "api", apiAddr, dir, append(every, apiProxy...)...)
	p.web = harness.StartProxy(t, p.webAgent, "web", webAddr, dir, append(every, "--upstream", "api="+p.api.Inbound+"@"+apiSA)...)
	return p
}

// sample is one request as the load generator saw it.
type sample struct {
	done   time.Time
	took   time.Duration
	failed bool // an error or a 5xx
}

// generate sends GETs through proxy at a fixed rate for d and returns
// what it saw. The schedule is open loop with catch-up (as fortio's):
// request i leaves at start + i/rate, or at once if the generator is
// late, whether or not earlier ones have answered.
func generate(t *testing.T, proxy string, rate int, d time.Duration) []sample {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: proxy}), MaxIdleConnsPerHost: 256}}
	defer client.CloseIdleConnections()
	var (
		mu  sync.Mutex
		out []sample
		wg  sync.WaitGroup
	)
	start := time.Now()
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * time.Second / time.Duration(rate))
		if due.Sub(start) >= d {
			break
		}
		time.Sleep(time.Until(due)) // the schedule's next departure
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			resp, err := client.Get("http://api/load")
			failed := err != nil
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				failed = resp.StatusCode >= 500
			}
			mu.Lock()
			out = append(out, sample{done: time.Now(), took: time.Since(t0), failed: failed})
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// genFigures are the generator's own figures over the requests that
// completed in [from, to).
type genFigures struct {
	requests, failures int
	rps, success       float64
	p99                time.Duration
}

func figures(ss []sample, from, to time.Time) genFigures {
	var f genFigures
	var lats []time.Duration
	for _, s := range ss {
		if s.done.Before(from) || !s.done.Before(to) {
			continue
		}
		lats = append(lats, s.took)
		if s.failed {
			f.failures++
		}
	}
	f.requests = len(lats)
	if f.requests == 0 {
		return f
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	f.rps = float64(f.requests) / to.Sub(from).Seconds()
	f.success = float64(f.requests-f.failures) / float64(f.requests)
	f.p99 = lats[int(math.Ceil(0.99*float64(f.requests)))-1]
	return f
}

// The must-show of issue 14: `sigil stat` agrees with a load generator's
// own counts, within 5 % for RPS and success rate and 20 % for p99. Real
// binaries: server, two agents, web's and api's sidecars, api failing
// every 10th request (a known 90 % success rate) after 100 ms (so the
// sidecars' own time is small beside it); the generator is a Go client
// at a fixed rate through web's sidecar, whose own figures are taken over
// the window `sigil stat` answered for. Sidecars and agents report every
// second; the 30 s window lies inside the steady load.
func TestStatAgreesWithLoadGenerator(t *testing.T) {
	t.Parallel()
	p := startReportingPair(t, []string{"--fail-every", "10", "--delay", "200ms"})
	m, web := p.m, p.web
	const (
		rate   = 50
		window = 30 * time.Second
		// The query's window is the 3 complete 10 s slots before it: run
		// the query 46 s into the load, so that they start at least 5 s
		// after it began (the reports lag by up to two 1 s intervals), and
		// keep the load 9 s longer.
		queryAt = 46 * time.Second
		run     = 55 * time.Second
	)
	var (
		stat    adminv1.StatResponse
		table   string
		statErr error
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		time.Sleep(queryAt) // a point in the load's own timeline, not a wait for readiness
		out, err := sigilStat(t, m, "stat", "svc", "api", "-n", "default", "--window", window.String(), "-o", "json")
		if err != nil {
			statErr = err
			return
		}
		statErr = json.Unmarshal([]byte(out), &stat)
		table, _ = sigilStat(t, m, "stat", "route", "-n", "default", "--window", window.String(), "-o", "wide")
	}()
	samples := generate(t, web.Outbound, rate, run)
	<-done
	if statErr != nil {
		t.Fatalf("sigil stat: %v", statErr)
	}
	// The generator's own figures over the window sigil stat answered
	// for, moved back by reportLag: a request reaches the window when its
	// sidecar's and then its agent's interval end, half of each interval
	// later on average.
	const reportLag = time.Second
	gen := figures(samples, stat.End.Add(-window-reportLag), stat.End.Add(-reportLag))
	all := figures(samples, time.Time{}, time.Now())
	t.Logf("generator over the window: %d requests, %d failed, %.1f rps, success %.4f, p99 %v (whole run: %d requests, success %.4f, p99 %v)",
		gen.requests, gen.failures, gen.rps, gen.success, gen.p99, all.requests, all.success, all.p99)
	t.Logf("sigil stat: %s", mustJSON(stat))
	t.Logf("sigil stat route --window %v:\n%s", window, table)
	if len(stat.Rows) != 1 {
		t.Fatalf("sigil stat rows %+v, want api's", stat.Rows)
	}
	row := stat.Rows[0]
	if row.SuccessRate == nil || row.P99 == nil {
		t.Fatalf("api row without traffic: %+v", row)
	}
	p99 := time.Duration(*row.P99 * float64(time.Millisecond))
	for _, c := range []struct {
		what      string
		got, want float64
		tolerance float64
	}{
		{"RPS", row.RPS, gen.rps, 0.05},
		{"success rate", *row.SuccessRate, gen.success, 0.05},
		{"p99", p99.Seconds(), gen.p99.Seconds(), 0.20},
	} {
		if math.Abs(c.got-c.want) > c.tolerance*c.want {
			t.Errorf("sigil stat %s %.4f, generator %.4f: more than %.0f %% apart", c.what, c.got, c.want, c.tolerance*100)
		}
	}
	if row.Meshed != 1 {
		t.Errorf("meshed %d, want api's one sidecar", row.Meshed)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
