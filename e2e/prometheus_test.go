package e2e

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/deploy/grafana"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"sigs.k8s.io/yaml"
)

// promResult is a Prometheus HTTP API query answer.
type promResult struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

// promQuery runs an instant query on the Prometheus at addr.
func promQuery(t *testing.T, addr, q string) promResult {
	t.Helper()
	code, body := getStatus(t, "http://"+addr+"/api/v1/query?"+url.Values{"query": {q}}.Encode())
	var r promResult
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("query %s: %d %s", q, code, body)
	}
	return r
}

// promWait polls q until it has a sample whose value satisfies ok, or
// fails after 30 s: each scrape is the signal awaited.
func promWait(t *testing.T, addr, q string, ok func(v string) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		r := promQuery(t, addr, q)
		for _, s := range r.Data.Result {
			if v, _ := s.Value[1].(string); ok(v) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never held: last answer %+v", q, r)
		}
		<-tick.C
	}
}

// atLeast is a promWait condition: a value of at least min.
func atLeast(min float64) func(string) bool {
	return func(v string) bool {
		f, err := strconv.ParseFloat(v, 64)
		return err == nil && f >= min
	}
}

// TestGrafanaDashboardAgainstPrometheus: a real Prometheus (Debian's),
// configured by deploy/prometheus/prometheus.yml with its targets pointed
// at a running mesh, scrapes the agents and sidecars while traffic flows;
// every query of the Grafana mesh dashboard then runs without error, and
// the panels that traffic feeds show data: request rate, success rate and
// latency by service and by destination_version, TCP bytes, policy
// denials and SVID expiry.
func TestGrafanaDashboardAgainstPrometheus(t *testing.T) {
	t.Parallel()
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (.ci/run installs Debian's)")
	}
	shipped, err := os.ReadFile("../deploy/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "config", "../deploy/prometheus/prometheus.yml").CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}

	mm := startMeteredMesh(t)
	ids, web, api := mm.ids, mm.web, mm.api
	mm.traffic(t) // the series exist before the first scrape

	// The shipped configuration, its targets pointed at this mesh and its
	// interval shortened; jobs and paths stay as shipped.
	var cfg map[string]any
	if err := yaml.Unmarshal(shipped, &cfg); err != nil {
		t.Fatal(err)
	}
	targets := map[string][]string{
		"sigil-agent":   {ids.web.Admin, ids.api.Admin},
		"sigil-sidecar": {web.Admin, api.Admin},
	}
	if m := dashboardURL.FindStringSubmatch(ids.m.Server.Output()); m != nil {
		u, _ := url.Parse(m[1])
		targets["sigil-server"] = []string{u.Host}
	}
	var jobs []any
	for _, j := range cfg["scrape_configs"].([]any) {
		job := j.(map[string]any)
		if ts, ok := targets[job["job_name"].(string)]; ok {
			job["static_configs"] = []any{map[string]any{"targets": ts}}
			jobs = append(jobs, job)
		}
	}
	cfg["scrape_configs"] = jobs
	cfg["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"}
	dir := t.TempDir()
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	p := harness.StartCmd(t, "prometheus", exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr))
	p.WaitFor(`Server is ready to receive web requests`, 60*time.Second)

	// Every target up, the first traffic scraped; then more traffic, and
	// a scrape that saw it, so rates have two points to differ.
	up := 0
	for _, ts := range targets {
		up += len(ts)
	}
	promWait(t, addr, `count(up{job=~"sigil-.*"} == 1)`, atLeast(float64(up)))
	promWait(t, addr, `sum(sigil_requests_total{reporter="source"})`, atLeast(11))
	mm.traffic(t)
	promWait(t, addr, `sum(sigil_requests_total{reporter="source"})`, atLeast(22))
	promWait(t, addr, `sum(sigil_tcp_connections_closed_total{reporter="destination"})`, atLeast(2))

	queries, err := grafana.Queries(grafana.MeshDashboard)
	if err != nil {
		t.Fatal(err)
	}
	mustShow := map[string]bool{
		"Global request volume A": true, "Global success rate (non-5xx) A": true,
		"Requests per second by destination service A": true, "Success rate (non-5xx) by destination service A": true,
		"p50 latency by destination service A": true, "p99 latency by destination service A": true,
		"Requests per second by version A": true, "p50 / p95 / p99 latency by version C": true,
		"TCP bytes sent and received by destination service A": true, "TCP connections opened and closed A": true,
		"Policy denials A": true, "Policy denials by sidecar A": true, "Policy denials by caller → service A": true,
		"Soonest SVID expiry A": true, "SVID expiry (seconds left) A": true,
	}
	if targets["sigil-server"] != nil {
		mustShow["Agents connected and configuration versions A"] = true
		mustShow["CA signing keys (seconds left) A"] = true
	}
	vars := strings.NewReplacer("$__rate_interval", "1m", "$namespace", ".*", "$service", ".*")
	for _, q := range queries {
		if q.Variable {
			continue // label_values() is Grafana's, not PromQL
		}
		r := promQuery(t, addr, vars.Replace(q.Expr))
		if r.Status != "success" {
			t.Errorf("%s: %s: %s", q.Where, q.Expr, r.Error)
			continue
		}
		if mustShow[q.Where] {
			delete(mustShow, q.Where)
			if len(r.Data.Result) == 0 {
				t.Errorf("%s: no data for %s", q.Where, q.Expr)
			}
		}
	}
	for where := range mustShow {
		t.Errorf("the dashboard has no query %q any more", where)
	}
	// The canary panels tell versions apart.
	r := promQuery(t, addr, `sum by (destination_version) (rate(sigil_requests_total{reporter="destination",destination_service_name="api"}[1m]))`)
	if len(r.Data.Result) != 1 || r.Data.Result[0].Metric["destination_version"] != "v1" {
		t.Errorf("requests by version: %+v, want api's v1", r.Data.Result)
	}
}
