package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

// The step logic runs against fakes of the admin client (ConfigStore and
// StatsReader) and a fake clock; e2e/rollout_test.go runs the real
// binaries, whose figures come from the sidecars' reports.

var _ StatsReader = (*adminv1.AdminClient)(nil)
var _ ConfigStore = (*adminv1.AdminClient)(nil)

const vsSpec = `{"hosts":["api"],"http":[{"name":"to-api","timeout":"5s","route":[{"destination":{"host":"api","subset":"v1"},"weight":100}]}]}`

// fakeMesh is the server as a rollout sees it: a stored VirtualService,
// the weight it gives v2, and figures per subset from a function of that
// weight.
type fakeMesh struct {
	t       *testing.T
	now     time.Time
	spec    string
	weights []int // v2's weight at each apply
	applied time.Time
	judged  bool // a query since the last apply
	figures func(weight int) map[string]adminv1.Golden
	queries []adminv1.StatQuery
}

func (f *fakeMesh) ListConfig(_ context.Context, kind string) ([]adminv1.Resource, error) {
	if kind != "virtualservices" {
		f.t.Fatalf("ListConfig(%q)", kind)
	}
	return []adminv1.Resource{
		{Kind: "VirtualService", Namespace: "other", Name: "api", Spec: json.RawMessage(`{"hosts":["api"],"http":[{"route":[{"destination":{"host":"api","subset":"v1"}}]}]}`)},
		{Kind: "VirtualService", Namespace: "default", Name: "api", Spec: json.RawMessage(f.spec)},
	}, nil
}

func (f *fakeMesh) Apply(_ context.Context, files []adminv1.File, dryRun bool) (adminv1.ApplyResponse, error) {
	if dryRun || len(files) != 1 {
		f.t.Fatalf("Apply(%d files, dryRun %v)", len(files), dryRun)
	}
	var doc struct {
		Kind     string `json:"kind"`
		Metadata struct{ Name, Namespace string }
		Spec     struct {
			Hosts []string `json:"hosts"`
			HTTP  []struct {
				Name    string `json:"name"`
				Timeout string `json:"timeout"`
				Route   []struct {
					Destination struct{ Host, Subset string }
					Weight      int
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(files[0].Content), &doc); err != nil {
		f.t.Fatal(err)
	}
	rt := doc.Spec.HTTP[0]
	if doc.Kind != "VirtualService" || doc.Metadata.Namespace != "default" || rt.Name != "to-api" || rt.Timeout != "5s" || len(rt.Route) != 2 {
		f.t.Fatalf("applied %s: want the stored VirtualService with its other fields kept and two destinations", files[0].Content)
	}
	w := map[string]int{}
	for _, d := range rt.Route {
		w[d.Destination.Subset] = d.Weight
	}
	if w["v1"]+w["v2"] != 100 {
		f.t.Fatalf("weights %v do not add up to 100", w)
	}
	f.weights = append(f.weights, w["v2"])
	f.applied = f.now
	f.judged = false
	return adminv1.ApplyResponse{Version: int64(len(f.weights))}, nil
}

func (f *fakeMesh) Stats(_ context.Context, q adminv1.StatQuery) (adminv1.StatResponse, error) {
	f.queries = append(f.queries, q)
	// The first judgement of a step covers its interval (in whole slots).
	if !f.judged && q.Window < config().Interval-statsResolution {
		f.t.Fatalf("first window of a step %s, want the interval %s in whole slots", q.Window, config().Interval)
	}
	f.judged = true
	// Only whole slots reported ReportDelay after the step was applied:
	// nothing of the step before.
	slotStart := time.Unix(0, f.now.UnixNano()/int64(statsResolution)*int64(statsResolution))
	if from := slotStart.Add(-q.Window); from.Before(f.applied.Add(DefaultReportDelay)) {
		f.t.Fatalf("window %s at %s reaches back to %s, before the step's reports (applied %s + %s)", q.Window, f.now, from, f.applied, DefaultReportDelay)
	}
	var out adminv1.StatResponse
	for subset, g := range f.figures(f.weights[len(f.weights)-1]) {
		out.Rows = append(out.Rows, adminv1.StatRow{Kind: adminv1.StatSubset, Namespace: "default", Name: "api", Subset: subset, Golden: g})
	}
	return out, nil
}

func golden(requests, failures uint64, p99 float64) adminv1.Golden {
	g := adminv1.Golden{Requests: requests, Failures: failures}
	if requests > 0 {
		sr := float64(requests-failures) / float64(requests)
		g.SuccessRate, g.P99 = &sr, &p99
	}
	return g
}

func config() Config {
	return Config{Namespace: "default", Service: "api", To: "v2", Steps: []int{10, 25, 50, 100}, Interval: 30 * time.Second,
		MinSuccessRate: 99, MaxSuccessRateDrop: 1, MaxP99: 500 * time.Millisecond, MinRequests: DefaultMinRequests, ReportDelay: DefaultReportDelay}
}

func TestRolloutSteps(t *testing.T) {
	for _, tc := range []struct {
		name        string
		figures     func(weight int) map[string]adminv1.Golden
		wantWeights []int
		wantWhy     string // "" : reaches 100 %
		maxElapsed  time.Duration
		minRate     float64 // 0: config()'s
	}{
		{
			name: "healthy v2 reaches 100 %",
			figures: func(w int) map[string]adminv1.Golden {
				return map[string]adminv1.Golden{"v2": golden(uint64(10*w), 0, 20), "v1": golden(uint64(10*(100-w)), 0, 20)}
			},
			wantWeights: []int{10, 25, 50, 100},
		},
		{
			name: "v2 failing 20 % is rolled back at the first step",
			figures: func(w int) map[string]adminv1.Golden {
				return map[string]adminv1.Golden{"v2": golden(100, 20, 20), "v1": golden(900, 0, 20)}
			},
			wantWeights: []int{10, 0},
			wantWhy:     "success rate 80.00 % is below --min-success-rate 99 %",
		},
		{
			name: "slow v2 is rolled back",
			figures: func(w int) map[string]adminv1.Golden {
				return map[string]adminv1.Golden{"v2": golden(100, 0, 900), "v1": golden(900, 0, 20)}
			},
			wantWeights: []int{10, 0},
			wantWhy:     "p99 latency 900.0 ms is above --max-p99 500ms",
		},
		{
			name: "v2 further below v1 than the drop allows",
			figures: func(w int) map[string]adminv1.Golden {
				if w >= 25 {
					return map[string]adminv1.Golden{"v2": golden(1000, 15, 20), "v1": golden(1000, 0, 20)}
				}
				return map[string]adminv1.Golden{"v2": golden(100, 0, 20), "v1": golden(900, 0, 20)}
			},
			wantWeights: []int{10, 25, 0},
			wantWhy:     "more than --max-success-rate-drop 1 points below v1's 100.00 %",
			minRate:     95,
		},
		{
			name: "too few requests fails safe after three intervals",
			figures: func(w int) map[string]adminv1.Golden {
				return map[string]adminv1.Golden{"v2": golden(3, 0, 20), "v1": golden(30, 0, 20)}
			},
			wantWeights: []int{10, 0},
			wantWhy:     "too few requests to judge",
			maxElapsed:  3*30*time.Second + DefaultReportDelay + statsResolution,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeMesh{t: t, now: time.Unix(1003, 0), spec: vsSpec, figures: tc.figures}
			start := f.now
			var out bytes.Buffer
			cfg := config()
			if tc.minRate != 0 {
				cfg.MinSuccessRate = tc.minRate
			}
			r := NewWithClock(cfg, f, f, &out, func() time.Time { return f.now }, func(_ context.Context, d time.Duration) error {
				f.now = f.now.Add(d)
				return nil
			})
			err := r.Run(t.Context())
			if tc.wantWhy == "" && err != nil {
				t.Fatalf("Run: %v\n%s", err, out.String())
			}
			if tc.wantWhy != "" && (!errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), tc.wantWhy)) {
				t.Fatalf("Run: %v, want a rollback because %q\n%s", err, tc.wantWhy, out.String())
			}
			if !slices.Equal(f.weights, tc.wantWeights) {
				t.Fatalf("v2 weights applied %v, want %v\n%s", f.weights, tc.wantWeights, out.String())
			}
			if tc.maxElapsed > 0 && f.now.Sub(start) > tc.maxElapsed {
				t.Fatalf("judged for %s, want at most %s", f.now.Sub(start), tc.maxElapsed)
			}
			for _, q := range f.queries {
				if q.Kind != adminv1.StatSubset || q.Name != "api" || q.Namespace != "default" || q.Window <= 0 || q.Window%statsResolution != 0 {
					t.Fatalf("stats query %+v", q)
				}
			}
		})
	}
}

func TestRolloutConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"steps not ending at 100", func(c *Config) { c.Steps = []int{10, 50} }, "--steps"},
		{"steps not rising", func(c *Config) { c.Steps = []int{50, 10, 100} }, "--steps"},
		{"short interval", func(c *Config) { c.Interval = time.Second }, "--interval"},
		{"rate above 100", func(c *Config) { c.MinSuccessRate = 101 }, "--min-success-rate"},
		{"from is to", func(c *Config) { c.From = "v2" }, "--from"},
		{"bad subset", func(c *Config) { c.To = "V2!" }, "--to"},
		{"no requests", func(c *Config) { c.MinRequests = 0 }, "--min-requests"},
		{"negative report delay", func(c *Config) { c.ReportDelay = -time.Second }, "--report-delay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config()
			tc.change(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// A VirtualService whose route sends elsewhere too, or to a third subset,
// is not the rollout's to change.
func TestRolloutTargetChoice(t *testing.T) {
	for _, tc := range []struct {
		name, spec, from string
		ok               bool
	}{
		{"v1 only", vsSpec, "", true},
		{"v1 and v2", `{"hosts":["api.default.svc.cluster.local"],"http":[{"route":[{"destination":{"host":"api","subset":"v1"},"weight":90},{"destination":{"host":"api","subset":"v2"},"weight":10}]}]}`, "v1", true},
		{"third subset", `{"hosts":["api"],"http":[{"route":[{"destination":{"host":"api","subset":"v1"}},{"destination":{"host":"api","subset":"v3"}}]}]}`, "", false},
		{"other host", `{"hosts":["api"],"http":[{"route":[{"destination":{"host":"web","subset":"v1"}}]}]}`, "", false},
		{"no subset", `{"hosts":["api"],"http":[{"route":[{"destination":{"host":"api"}}]}]}`, "", false},
		{"other service", `{"hosts":["web"],"http":[{"route":[{"destination":{"host":"api","subset":"v1"}}]}]}`, "", false},
		// Two labels are a host outside the mesh in a resource, as Istio
		// reads them: not the service api of default.
		{"two-label host", `{"hosts":["api.default"],"http":[{"route":[{"destination":{"host":"api.default","subset":"v1"}}]}]}`, "", false},
		{"svc form", `{"hosts":["api.default.svc"],"http":[{"route":[{"destination":{"host":"api.default.svc","subset":"v1"}}]}]}`, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config()
			c.From = tc.from
			_, err := findTarget([]adminv1.Resource{{Namespace: "default", Name: "api", Spec: json.RawMessage(tc.spec)}}, c)
			if (err == nil) != tc.ok {
				t.Fatalf("findTarget: %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// An interrupted rollout (Ctrl-C) puts every request back on v1.
func TestRolloutInterruptedRollsBack(t *testing.T) {
	f := &fakeMesh{t: t, now: time.Unix(1000, 0), spec: vsSpec, figures: func(int) map[string]adminv1.Golden { return nil }}
	ctx, cancel := context.WithCancel(t.Context())
	var out bytes.Buffer
	r := NewWithClock(config(), f, f, &out, func() time.Time { return f.now }, func(ctx context.Context, d time.Duration) error {
		cancel()
		return ctx.Err()
	})
	err := r.Run(ctx)
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "step 1: interrupted") {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if !slices.Equal(f.weights, []int{10, 0}) {
		t.Fatalf("v2 weights applied %v, want [10 0]", f.weights)
	}
}
