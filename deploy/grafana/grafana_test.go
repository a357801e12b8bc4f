package grafana

import (
	"net"
	"os"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

// targetLabels are the labels Prometheus adds to every series it scrapes.
var targetLabels = map[string]bool{"job": true, "instance": true}

// TestDashboardQueriesDocumentedMetrics: every metric the mesh dashboard
// queries is one docs/metrics.md lists, and every label it matches or
// groups on is one the metric's section documents (or le of a histogram,
// or a target label). The e2e test TestDashboardMetricsExposed checks
// the same queries against the running binaries.
func TestDashboardQueriesDocumentedMetrics(t *testing.T) {
	md, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	docs := DocumentedMetrics(string(md))
	if len(docs) < 30 {
		t.Fatalf("only %d metrics read from docs/metrics.md: the tables' shape changed?", len(docs))
	}
	queries, err := Queries(MeshDashboard)
	if err != nil {
		t.Fatal(err)
	}
	if len(queries) < 20 {
		t.Fatalf("only %d queries read from the dashboard", len(queries))
	}
	used := map[string]bool{}
	for _, q := range queries {
		e, err := q.Parse()
		if err != nil {
			t.Errorf("%s: %v", q.Where, err)
			continue
		}
		if len(e.Selectors) == 0 {
			t.Errorf("%s: %q reads no metric", q.Where, q.Expr)
		}
		known := func(label string, metrics ...string) bool {
			for _, m := range metrics {
				d := docs[Base(m, docs)]
				if d.Words[label] || targetLabels[label] || (label == "le" && m != Base(m, docs)) {
					return true
				}
			}
			return false
		}
		var names []string
		for _, s := range e.Selectors {
			base := Base(s.Metric, docs)
			if _, ok := docs[base]; !ok {
				t.Errorf("%s: metric %s is not in docs/metrics.md", q.Where, s.Metric)
				continue
			}
			used[docs[base].Section] = true
			names = append(names, s.Metric)
			for _, l := range s.Labels {
				if !known(l, s.Metric) {
					t.Errorf("%s: %s has no label %s in docs/metrics.md", q.Where, s.Metric, l)
				}
			}
		}
		for _, l := range e.Grouping {
			if len(names) > 0 && !known(l, names...) {
				t.Errorf("%s: grouping label %s is on none of %v in docs/metrics.md", q.Where, l, names)
			}
		}
	}
	for _, sec := range []string{"Server", "Agent", "Sidecar", "Sidecar request metrics"} {
		if !used[sec] {
			t.Errorf("the dashboard shows nothing of the %s section", sec)
		}
	}
}

// TestPrometheusScrapeConfig: deploy/prometheus/prometheus.yml scrapes
// /metrics of the server, the agent and sidecars at well-formed targets,
// under the job names the docs use.
func TestPrometheusScrapeConfig(t *testing.T) {
	raw, err := os.ReadFile("../prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Global        map[string]any `json:"global"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			MetricsPath   string `json:"metrics_path"`
			StaticConfigs []struct {
				Targets []string          `json:"targets"`
				Labels  map[string]string `json:"labels"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	var jobs []string
	for _, sc := range cfg.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
		if sc.MetricsPath != "/metrics" || len(sc.StaticConfigs) == 0 {
			t.Errorf("job %s: metrics_path %q, %d static configs", sc.JobName, sc.MetricsPath, len(sc.StaticConfigs))
		}
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				if _, port, err := net.SplitHostPort(target); err != nil || port == "" {
					t.Errorf("job %s: target %q is not HOST:PORT", sc.JobName, target)
				}
			}
		}
	}
	if want := []string{"sigil-server", "sigil-agent", "sigil-sidecar"}; !slices.Equal(jobs, want) {
		t.Errorf("jobs %v, want %v", jobs, want)
	}
}
