package e2e

import (
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sigil-mesh/sigil/deploy/grafana"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// meteredMesh is a server, one agent per service identity, and web and
// api (label version=v1) behind sidecars: the mesh the metrics tests
// scrape.
type meteredMesh struct {
	ids      identities
	web, api *harness.ProxyProc
}

func startMeteredMesh(t *testing.T) meteredMesh {
	t.Helper()
	ids := startIdentities(t)
	_, apiApp := harness.StartApp(t, "api")
	_, webApp := harness.StartApp(t, "web")
	api := harness.StartProxy(t, ids.api, "api", apiApp, ids.policyDir, "--label", "version=v1")
	web := harness.StartProxy(t, ids.web, "web", webApp, ids.policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA)
	return meteredMesh{ids: ids, web: web, api: api}
}

// traffic sends web → api 10 GETs the policy allows, a POST it denies
// (403) and a request through an opaque TCP tunnel: 11 requests each
// reporter counts, and one TCP connection.
func (m meteredMesh) traffic(t *testing.T) {
	t.Helper()
	for range 10 {
		if code, body := curl(t, "-x", "http://"+m.web.Outbound, "http://api/hello"); code != 200 {
			t.Fatalf("GET: %d %s", code, body)
		}
	}
	if code, _ := curl(t, "-x", "http://"+m.web.Outbound, "-X", "POST", "-d", "x", "http://api/hello"); code != 403 {
		t.Fatalf("POST: %d, want 403 from the policy", code)
	}
	if err := tunnelGet(m.web.Outbound); err != nil {
		t.Fatalf("TCP through the mesh: %v", err)
	}
}

// dashboardURL finds where the server serves its dashboard and /metrics.
var dashboardURL = regexp.MustCompile(`"msg":"sigil-server running".*"dashboard":"(http[^"]+)"`)

// exposedSeries is what one scrape showed: each series name with the
// label names its series carry.
type exposedSeries map[string]map[string]bool

// scrapeSeries reads the Prometheus text on url into names and labels;
// a histogram's _bucket (with le), _sum and _count are named as
// Prometheus stores them.
func scrapeSeries(t *testing.T, url string, into exposedSeries) {
	t.Helper()
	code, body := getStatus(t, url)
	if code != 200 {
		t.Fatalf("GET %s: %d", url, code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	add := func(name string, labels ...string) {
		if into[name] == nil {
			into[name] = map[string]bool{}
		}
		for _, l := range labels {
			into[name][l] = true
		}
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName())
			}
			if m.GetHistogram() != nil {
				add(name+"_bucket", append(labels, "le")...)
				add(name+"_sum", labels...)
				add(name+"_count", labels...)
				continue
			}
			add(name, labels...)
		}
	}
}

// TestDashboardMetricsExposed: every metric and label the Grafana mesh
// dashboard (deploy/grafana) queries of the agent and the sidecars is in
// what the real binaries serve on /metrics after traffic: requests
// allowed and denied, an opaque TCP connection and a failed mTLS
// handshake. The server's /metrics is on its dashboard listener: when
// the server runs one (it says where in its "sigil-server running" line),
// its series are checked the same way; without one, they are checked
// against its registry in server.TestServerMetricsDocumented. The
// dashboard's names are checked against docs/metrics.md in
// deploy/grafana.
func TestDashboardMetricsExposed(t *testing.T) {
	t.Parallel()
	mm := startMeteredMesh(t)
	ids, web, api := mm.ids, mm.web, mm.api
	mm.traffic(t)
	// Plain text at the mTLS port: a handshake failure (not_tls).
	if c, err := net.DialTimeout("tcp", api.Inbound, 5*time.Second); err == nil {
		c.Write([]byte("GET / HTTP/1.1\r\nHost: api\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.Read(make([]byte, 64)) // until the sidecar closes it
		c.Close()
	}

	// The sidecar serves two sections of docs/metrics.md.
	sidecar := exposedSeries{}
	served := map[string]exposedSeries{"Agent": {}, "Sidecar": sidecar, "Sidecar request metrics": sidecar}
	scrapeSeries(t, "http://"+ids.web.Admin+"/metrics", served["Agent"])
	if m := dashboardURL.FindStringSubmatch(ids.m.Server.Output()); m != nil {
		served["Server"] = exposedSeries{}
		scrapeSeries(t, strings.TrimSuffix(m[1], "/")+"/metrics", served["Server"])
	} else {
		t.Log("the server runs no dashboard listener: its series are checked against its registry (server.TestServerMetricsDocumented)")
	}
	for _, p := range []*harness.ProxyProc{web, api} {
		scrapeSeries(t, "http://"+p.Admin+"/metrics", sidecar)
	}

	md, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	docs := grafana.DocumentedMetrics(string(md))
	queries, err := grafana.Queries(grafana.MeshDashboard)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, q := range queries {
		e, err := q.Parse()
		if err != nil {
			t.Fatalf("%s: %v", q.Where, err)
		}
		var labelsOf []map[string]bool
		for _, s := range e.Selectors {
			section := docs[grafana.Base(s.Metric, docs)].Section
			series, ok := served[section]
			if !ok {
				continue // the server's, without a dashboard listener
			}
			labels, ok := series[s.Metric]
			if !ok {
				t.Errorf("%s: %s (%s) is not served after traffic", q.Where, s.Metric, section)
				continue
			}
			checked++
			labelsOf = append(labelsOf, labels)
			for _, l := range s.Labels {
				if !labels[l] && l != "job" && l != "instance" {
					t.Errorf("%s: %s has no label %s", q.Where, s.Metric, l)
				}
			}
		}
		for _, l := range e.Grouping {
			found := len(labelsOf) == 0 || l == "job" || l == "instance"
			for _, labels := range labelsOf {
				found = found || labels[l]
			}
			if !found {
				t.Errorf("%s: no series it reads has the grouping label %s", q.Where, l)
			}
		}
	}
	if checked < 5 {
		t.Fatalf("only %d of the dashboard's selectors were checked against the binaries", checked)
	}
	t.Logf("%d selectors checked against the binaries' /metrics", checked)
}
