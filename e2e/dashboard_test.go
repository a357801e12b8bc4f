package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/internal/headless"
)

var updateDashboardPNG = flag.Bool("update-dashboard-png", false, "write TestDashboardShowsLiveTraffic's screenshot of the services table to docs/dashboard.png")

// dashboardCanary splits api 70/30 between v1 and v2 in a named route,
// so the canary view has weights to show beside each subset's figures.
const dashboardCanary = subsetsDR + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  http:
  - name: canary
    route:
    - {destination: {host: api, subset: v1}, weight: 70}
    - {destination: {host: api, subset: v2}, weight: 30}
`

// TestDashboardShowsLiveTraffic drives a real headless Chromium against
// the real server's dashboard while traffic with a known failure rate
// flows between real sidecars: every api instance answers 500 to every
// fifth request it gets (sigil-demo-app --fail-every 5), so api's success
// rate is 80 %, whatever the split. The services table the page's
// JavaScript renders must show api and web, api with a non-zero RPS and a
// success rate of 80 % ± 3 points — and so must the canary view for each
// subset, beside the weights the VirtualService configures. The
// screenshot is kept as a test artifact (go test -artifacts) and, with
// -update-dashboard-png, replaces docs/dashboard.png.
func TestDashboardShowsLiveTraffic(t *testing.T) {
	if _, err := headless.Find(); errors.Is(err, headless.ErrNoBrowser) {
		t.Skip(err) // .ci/run installs Debian's chromium
	}
	tm := startTrafficMesh(t,
		&backend{name: "api-v1", version: "v1", appArgs: []string{"--fail-every", "5"}},
		&backend{name: "api-v2", version: "v2", appArgs: []string{"--fail-every", "5"}})
	dash := tm.ids.m.Dashboard
	if dash == "" {
		t.Fatal("the server logged no dashboard URL")
	}
	tm.apply(t, dashboardCanary)

	results := tm.load(1000, 8, "/", nil)
	codes, _ := countStatus(results)
	if codes[200]+codes[500] != len(results) || codes[500] < 180 || codes[500] > 220 {
		t.Fatalf("load: %v, want about 20%% 500s and nothing else", codes)
	}
	sent := 0
	for _, b := range tm.backends {
		sent += appRequests(t, b.addr)
	}

	// Wait, through the page's own API, until the server's window holds
	// every request the apps answered: reports arrive every few seconds.
	var api overviewRow
	deadline := time.Now().Add(90 * time.Second)
	for {
		api = dashboardRow(t, dash, "default", "api")
		if api.Requests >= uint64(sent) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dashboard's window holds %d of api's %d requests after 90s (sidecars and agents report every 10 s)", api.Requests, sent)
		}
		time.Sleep(500 * time.Millisecond) // polling the server's window; nothing to wait on from outside
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	opts := headless.Options{Budget: 3 * time.Second, Width: 1280, Height: 480}
	dom, err := headless.DumpDOM(ctx, dash+"#/?window=5m", opts)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`<body[^>]*data-rendered="overview"`).MatchString(dom) {
		t.Fatalf("the page did not render the services table:\n%s", dom)
	}
	for _, svc := range []string{"api", "web"} {
		if !regexp.MustCompile(`<tr data-namespace="default" data-service="` + svc + `">`).MatchString(dom) {
			t.Errorf("no row for service %s:\n%s", svc, dom)
		}
	}
	if rps := cellValue(t, dom, "svc-default-api-rps"); rps <= 0 {
		t.Errorf("api RPS %v, want above 0", rps)
	}
	if sr := cellValue(t, dom, "svc-default-api-success"); sr < 0.77 || sr > 0.83 {
		t.Errorf("api success rate %.4f on the page, want 0.80 ± 0.03", sr)
	}
	if p99 := cellValue(t, dom, "svc-default-api-p99"); p99 <= 0 {
		t.Errorf("api p99 %v ms, want a latency", p99)
	}

	canaries, err := headless.DumpDOM(ctx, dash+"#/canaries?window=5m", opts)
	if err != nil {
		t.Fatal(err)
	}
	for subset, weight := range map[string]string{"v1": "70", "v2": "30"} {
		re := regexp.MustCompile(`(?s)<tr data-canary="default/api/canary" data-subset="` + subset + `">.*?data-col="weight" data-value="` + weight + `".*?data-col="success" data-value="([0-9.]+)"`)
		m := re.FindStringSubmatch(canaries)
		if m == nil {
			t.Errorf("canary view: no %s row with weight %s:\n%s", subset, weight, canaries)
			continue
		}
		if sr, _ := strconv.ParseFloat(m[1], 64); sr < 0.77 || sr > 0.83 {
			t.Errorf("canary view: %s success rate %s, want 0.80 ± 0.03", subset, m[1])
		}
	}

	shot := filepath.Join(t.ArtifactDir(), "dashboard.png")
	if err := headless.Screenshot(ctx, dash+"#/?window=5m", shot, opts); err != nil {
		t.Fatal(err)
	}
	for _, view := range []string{"canaries", "graph", "identities"} {
		if err := headless.Screenshot(ctx, dash+"#/"+view+"?window=5m", filepath.Join(t.ArtifactDir(), "dashboard-"+view+".png"), headless.Options{Budget: 3 * time.Second, Width: 1280, Height: 800}); err != nil {
			t.Error(err)
		}
	}
	if *updateDashboardPNG {
		b, err := os.ReadFile(shot)
		if err == nil {
			err = os.WriteFile(filepath.Join("..", "docs", "dashboard.png"), b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// overviewRow is the part of a dashboard /api/overview row the test reads.
type overviewRow struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Requests  uint64   `json:"requests"`
	Success   *float64 `json:"success_rate"`
}

// dashboardRow reads one service's row from the dashboard's JSON API.
func dashboardRow(t *testing.T, dash, ns, name string) overviewRow {
	t.Helper()
	res, err := http.Get(dash + "api/overview?window=5m")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var o struct{ Rows []overviewRow }
	if err := json.NewDecoder(res.Body).Decode(&o); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("dashboard overview: %d %v", res.StatusCode, err)
	}
	for _, r := range o.Rows {
		if r.Namespace == ns && r.Name == name {
			return r
		}
	}
	return overviewRow{}
}

// appRequests is how many requests a demo app answered (its /__stats),
// straight, not through the mesh.
func appRequests(t *testing.T, addr string) int {
	t.Helper()
	res, err := http.Get("http://" + addr + "/__stats")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var st struct{ Requests int }
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("app stats %s: %v", b, err)
	}
	return st.Requests
}

// cellValue reads the data-value of the table cell with this id.
func cellValue(t *testing.T, dom, id string) float64 {
	t.Helper()
	m := regexp.MustCompile(`data-value="([^"]*)" id="` + regexp.QuoteMeta(id) + `"`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no cell %s in the page:\n%s", id, dom)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("cell %s: value %q: %v", id, m[1], err)
	}
	return v
}
