package dashboard

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

func newTestHandler(t *testing.T, stats *fakeStats, inv *fakeInventory) http.Handler {
	t.Helper()
	h, err := New(Config{Stats: stats, Denials: stats, Inventory: inv, Splits: inv, Now: func() time.Time { return testNow }, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t *testing.T, h http.Handler, target string) (*http.Response, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	return res, body
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	return v
}

// TestDashboardAPI checks each view's JSON against a fake telemetry store
// and inventory.
func TestDashboardAPI(t *testing.T) {
	tests := []struct {
		name   string
		target string
		check  func(t *testing.T, body []byte, stats *fakeStats)
	}{
		{"overview joins traffic with registered services", "/api/overview", func(t *testing.T, body []byte, stats *fakeStats) {
			o := decode[Overview](t, body)
			if len(o.Rows) != 3 {
				t.Fatalf("rows %+v, want api, web and idle", o.Rows)
			}
			api, idle := o.Rows[0], o.Rows[2]
			if api.Name != "api" || api.Meshed != 2 || api.Endpoints != 2 || *api.SuccessRate != 0.98 || api.RPS != 10 {
				t.Errorf("api row %+v", api)
			}
			if idle.Namespace != "staging" || idle.Name != "idle" || idle.Endpoints != 1 || idle.SuccessRate != nil || idle.RPS != 0 {
				t.Errorf("idle row %+v: a service with no traffic keeps its row, with no rate", idle)
			}
			if o.WindowSeconds != 60 || !o.Now.Equal(testNow) {
				t.Errorf("header %+v", o.Header)
			}
			if q := stats.queries[0]; q.Kind != adminv1.StatService || q.Window != DefaultWindow {
				t.Errorf("query %+v", q)
			}
		}},
		{"window is passed to the store", "/api/overview?window=5m&namespace=staging", func(t *testing.T, body []byte, stats *fakeStats) {
			o := decode[Overview](t, body)
			if len(o.Rows) != 1 || o.Rows[0].Name != "idle" {
				t.Errorf("rows %+v, want staging's only", o.Rows)
			}
			if q := stats.queries[0]; q.Window != 5*time.Minute || q.Namespace != "staging" {
				t.Errorf("query %+v", q)
			}
		}},
		{"service page: edges by peer identity, subsets, routes", "/api/service?namespace=default&name=web", func(t *testing.T, body []byte, _ *fakeStats) {
			p := decode[ServicePage](t, body)
			if p.Service.Name != "web" || p.Service.Endpoints != 1 {
				t.Errorf("service %+v", p.Service)
			}
			if len(p.Inbound) != 1 || p.Inbound[0].Source != curlID {
				t.Errorf("inbound %+v, want the client's identity", p.Inbound)
			}
			if len(p.Outbound) != 1 || p.Outbound[0].Destination != apiID {
				t.Errorf("outbound %+v, want web → api", p.Outbound)
			}
		}},
		{"service page of api", "/api/service?namespace=default&name=api", func(t *testing.T, body []byte, _ *fakeStats) {
			p := decode[ServicePage](t, body)
			if len(p.Subsets) != 2 || len(p.Routes) != 1 || p.Routes[0].Route != "canary" {
				t.Errorf("subsets %+v routes %+v", p.Subsets, p.Routes)
			}
			if len(p.Inbound) != 1 || p.Inbound[0].Source != webID || len(p.Outbound) != 0 {
				t.Errorf("inbound %+v outbound %+v", p.Inbound, p.Outbound)
			}
		}},
		{"canaries: configured weights beside each subset's figures", "/api/canaries", func(t *testing.T, body []byte, _ *fakeStats) {
			c := decode[Canaries](t, body)
			if len(c.Canaries) != 1 || len(c.Canaries[0].Rows) != 2 {
				t.Fatalf("canaries %+v", c.Canaries)
			}
			v1, v2 := c.Canaries[0].Rows[0], c.Canaries[0].Rows[1]
			if v1.Weight != 90 || v1.Stats == nil || *v1.Stats.SuccessRate != 1 {
				t.Errorf("v1 %+v", v1)
			}
			if v2.Weight != 10 || v2.Stats == nil || *v2.Stats.SuccessRate != 0.8 {
				t.Errorf("v2 %+v", v2)
			}
		}},
		{"graph: a node per service, the outside client by identity", "/api/graph", func(t *testing.T, body []byte, _ *fakeStats) {
			g := decode[Graph](t, body)
			cols := map[string]int{}
			for _, n := range g.Nodes {
				cols[n.ID] = n.Column
			}
			want := map[string]int{"id:" + curlID: 0, "svc:default/web": 1, "svc:default/api": 2}
			if len(cols) != len(want) {
				t.Fatalf("nodes %+v", g.Nodes)
			}
			for id, c := range want {
				if got, ok := cols[id]; !ok || got != c {
					t.Errorf("node %s column %d (present %v), want %d", id, got, ok, c)
				}
			}
			if len(g.Edges) != 2 || g.Edges[0].From != "svc:default/web" || g.Edges[0].To != "svc:default/api" {
				t.Errorf("edges %+v", g.Edges)
			}
		}},
		{"identities and CA state", "/api/identities", func(t *testing.T, body []byte, _ *fakeStats) {
			p := decode[identitiesPage](t, body)
			if len(p.SVIDs) != 2 || len(p.Authorities) != 2 || p.BundleSequence != 3 {
				t.Errorf("identities %+v", p)
			}
		}},
		{"denials", "/api/denials?limit=10", func(t *testing.T, body []byte, _ *fakeStats) {
			p := decode[DenialsPage](t, body)
			if len(p.Denials) != 1 || p.Denials[0].DecisionID != "d-1" {
				t.Errorf("denials %+v", p.Denials)
			}
		}},
		{"no denials is an empty list, not null", "/api/denials?namespace=staging", func(t *testing.T, body []byte, _ *fakeStats) {
			if !strings.Contains(string(body), `"denials":[]`) {
				t.Errorf("body %s", body)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stats, inv := meshFixture()
			res, body := get(t, newTestHandler(t, stats, inv), tt.target)
			if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, type %q: %s", res.StatusCode, res.Header.Get("Content-Type"), body)
			}
			tt.check(t, body, stats)
		})
	}
}

// TestDashboardAPIRefusesBadQueries: every parameter is checked, and the
// answer says which one was wrong.
func TestDashboardAPIRefusesBadQueries(t *testing.T) {
	tests := []struct{ target, want string }{
		{"/api/overview?window=5s", "window"},
		{"/api/overview?window=16m", "window"},
		{"/api/overview?window=soon", "window"},
		{"/api/overview?namespace=Not_A_Label", "namespace"},
		{"/api/service?namespace=default", "name"},
		{"/api/service?namespace=default&name=a/b", "name"},
		{"/api/graph?window=0s", "window"},
		{"/api/canaries?namespace=..", "namespace"},
		{"/api/denials?limit=0", "limit"},
		{"/api/denials?limit=501", "limit"},
		{"/api/denials?limit=x", "limit"},
		// Misspelt, foreign or repeated parameters are refused, not
		// silently read as the defaults.
		{"/api/overview?windw=5m", "windw"},
		{"/api/overview?window=1m&window=5m", "window"},
		{"/api/service?namespace=default&name=api&name=web", "name"},
		{"/api/identities?namespace=default", "namespace"},
		{"/api/denials?window=1m", "window"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			stats, inv := meshFixture()
			res, body := get(t, newTestHandler(t, stats, inv), tt.target)
			var e struct{ Error string }
			_ = json.Unmarshal(body, &e)
			if res.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error, tt.want) {
				t.Errorf("status %d, error %q: want 400 naming %s", res.StatusCode, e.Error, tt.want)
			}
		})
	}
}

// TestDashboardAPIStoreError: a failing source is a 500 that says what
// failed, never a half-empty table.
func TestDashboardAPIStoreError(t *testing.T) {
	stats, inv := meshFixture()
	stats.err = errors.New("window store closed")
	h := newTestHandler(t, stats, inv)
	for _, target := range []string{"/api/overview", "/api/service?namespace=default&name=api", "/api/canaries", "/api/graph", "/api/denials"} {
		res, body := get(t, h, target)
		if res.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "window store closed") {
			t.Errorf("%s: status %d body %s", target, res.StatusCode, body)
		}
	}
}

// TestDashboardHeaders: the page and the API are served under a strict
// Content-Security-Policy, with the embedded assets.
func TestDashboardHeaders(t *testing.T) {
	stats, inv := meshFixture()
	h := newTestHandler(t, stats, inv)
	for _, tt := range []struct{ target, typ, body string }{
		{"/", "text/html", `<script src="app.js"`},
		{"/app.js", "javascript", "textContent"},
		{"/app.css", "text/css", "table"},
		{"/api/overview", "application/json", `"rows"`},
	} {
		res, body := get(t, h, tt.target)
		if res.StatusCode != http.StatusOK || !strings.Contains(res.Header.Get("Content-Type"), tt.typ) || !strings.Contains(string(body), tt.body) {
			t.Errorf("%s: status %d type %q", tt.target, res.StatusCode, res.Header.Get("Content-Type"))
		}
		if csp := res.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'self'") {
			t.Errorf("%s: CSP %q", tt.target, csp)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v", tt.target, res.Header)
		}
	}
	if res, _ := get(t, h, "/metrics"); res.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics without a registry: %d, want 404", res.StatusCode)
	}
	if _, err := New(Config{Stats: stats}); !errors.Is(err, ErrMissingSource) {
		t.Errorf("New without sources: %v", err)
	}
}

// TestDashboardAssetsAreSelfContained: nothing the page loads comes from
// another origin, and no inline script or style needs a CSP exception.
func TestDashboardAssetsAreSelfContained(t *testing.T) {
	for _, name := range []string{"assets/index.html", "assets/app.js", "assets/app.css"} {
		b, err := assets.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, bad := range []string{"http://", "https://", "//cdn", "innerHTML", "style=\"", "onclick", "eval("} {
			if strings.Contains(s, bad) && !(bad == "http://" && strings.Contains(s, "http://www.w3.org/2000/svg")) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
	b, _ := assets.ReadFile("assets/index.html")
	if strings.Contains(string(b), "<script>") || strings.Contains(string(b), "<style>") {
		t.Error("index.html has an inline script or style")
	}
}
