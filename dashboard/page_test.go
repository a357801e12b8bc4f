package dashboard

import (
	"context"
	"errors"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/internal/headless"
)

// TestDashboardPageRenders loads every view in headless Chromium against
// the fake telemetry store and reads the DOM the page's JavaScript built:
// the figures land in the cells tests and scripts read (data-col,
// data-value, ids), under the Content-Security-Policy, and text from the
// network stays text. CI installs chromium (.ci/run); without it the test
// is skipped.
func TestDashboardPageRenders(t *testing.T) {
	if _, err := headless.Find(); errors.Is(err, headless.ErrNoBrowser) {
		t.Skip(err)
	}
	stats, inv := meshFixture()
	srv := httptest.NewServer(newTestHandler(t, stats, inv))
	t.Cleanup(srv.Close)

	tests := []struct {
		view string
		want []string // regular expressions over the dumped DOM
	}{
		{"#/", []string{
			`<body[^>]*data-rendered="overview"`,
			`<tr data-namespace="default" data-service="api">`,
			`<td class="num warn" data-col="success" data-value="0.98" id="svc-default-api-success">98.00%</td>`,
			`data-col="rps" data-value="10" id="svc-default-api-rps">10.00</td>`,
			`data-col="p99" data-value="40" id="svc-default-api-p99">40 ms</td>`,
			`data-col="meshed" data-value="2" id="svc-default-api-meshed">2/2</td>`,
			`<tr data-namespace="staging" data-service="idle">`,
			`id="svc-staging-idle-success">-</td>`,
		}},
		{"#/service/default/api", []string{
			`data-rendered="service"`,
			`<table id="inbound">.*data-peer="` + regexp.QuoteMeta(webID) + `"`,
			`<table id="subsets">.*data-key="v1".*data-key="v2"`,
			`<table id="routes">.*data-key="canary"`,
		}},
		{"#/canaries", []string{
			`data-rendered="canaries"`,
			`data-canary="default/api/canary" data-subset="v1">.*data-col="weight" data-value="90"`,
			`data-subset="v2">.*data-col="weight" data-value="10">10%</td><td class="num bad" data-col="success" data-value="0.8"`,
		}},
		{"#/graph", []string{
			`data-rendered="graph"`,
			`<svg[^>]*id="graph"`,
			`<path[^>]*stroke="#b7791f"[^>]*data-from="svc:default/web" data-to="svc:default/api"`,
			`<path[^>]*stroke="#1a7f37"[^>]*data-from="id:` + regexp.QuoteMeta(curlID) + `"`,
		}},
		{"#/identities", []string{
			`data-rendered="identities"`,
			`trust bundle sequence 3`,
			`<tr data-authority="2"><td data-col="kind">intermediate</td><td data-col="status" class="ok">active</td>`,
			`<tr data-spiffe-id="` + regexp.QuoteMeta(apiID) + `">.*in 30m`,
		}},
		{"#/denials", []string{
			`data-rendered="denials"`,
			`<tr data-decision-id="d-1">.*/admin/&lt;script&gt;x&lt;/script&gt;`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.view, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			dom, err := headless.DumpDOM(ctx, srv.URL+"/"+tt.view, headless.Options{Budget: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(dom, `id="error" class="error">`) && !strings.Contains(dom, `id="error" class="error" hidden`) {
				t.Errorf("the page shows an error: %s", dom)
			}
			for _, re := range tt.want {
				if !regexp.MustCompile("(?s)" + re).MatchString(dom) {
					t.Errorf("DOM lacks %s\n%s", re, dom)
				}
			}
			if strings.Contains(dom, "<script>x</script>") {
				t.Error("a path from the network was rendered as markup")
			}
		})
	}

	// A window in the hash is the window the page asks for.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before := len(stats.windows())
	if _, err := headless.DumpDOM(ctx, srv.URL+"/#/graph?window=5m", headless.Options{Budget: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	ws := stats.windows()[before:]
	if len(ws) == 0 || !slices.Contains(ws, 5*time.Minute) || slices.Contains(ws, DefaultWindow) {
		t.Errorf("windows asked for with #/graph?window=5m: %v", ws)
	}
}
