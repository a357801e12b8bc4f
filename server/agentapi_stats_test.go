package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/sigil-mesh/sigil/telemetry"
	"github.com/sigil-mesh/sigil/telemetry/window"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	statsReviews = "spiffe://example.org/ns/default/sa/reviews"
	statsPage    = "spiffe://example.org/ns/default/sa/productpage"
	statsOther   = "spiffe://example.org/ns/default/sa/ratings"
)

// statsServer is a server whose window runs on a clock the test moves:
// *now is read at every call.
func statsServer(t *testing.T, now *time.Time) *Server {
	t.Helper()
	s, store := storeServer(t)
	st, err := window.New(window.Config{Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	s.stats = st
	sel, err := selector.Parse("unix:uid:1")
	if err != nil {
		t.Fatal(err)
	}
	// agent1's node runs reviews and productpage; ratings is elsewhere.
	for _, id := range []string{statsReviews, statsPage} {
		if _, err := store.CreateEntry(context.Background(), registry.Entry{SPIFFEID: id, ParentID: agent1, Selectors: []selector.Selector{sel}}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func statsSeries(reporter, src, dst, svc string, n, failed uint64) *agentv1.StatsSeries {
	return &agentv1.StatsSeries{
		Key:      &agentv1.StatsKey{Reporter: reporter, SourcePrincipal: src, DestinationPrincipal: dst, DestinationNamespace: "default", DestinationService: svc, Protocol: "http"},
		Requests: n, Failures: failed, BucketIndex: []uint32{uint32(telemetry.Bucket(5 * time.Millisecond))}, BucketCount: []uint64{n},
	}
}

// An agent speaks for its own node only: series, denials and sidecars
// that name workloads it holds no entry for (or a service its workload
// may not serve) are dropped, and a malformed report is refused whole.
func TestStatsReportTrustsAgentForItsNode(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := statsServer(t, &now)
	ctx := context.Background()
	rep := &agentv1.StatsReport{EndUnixNanos: now.UnixNano(), IntervalMillis: 10000, Overflow: 4,
		Series: []*agentv1.StatsSeries{
			// Its reviews sidecar served productpage: kept.
			statsSeries(window.ReporterDestination, statsPage, statsReviews, "reviews", 10, 1),
			// Claims ratings (another node's) served: dropped.
			statsSeries(window.ReporterDestination, statsPage, statsOther, "ratings", 1000, 1000),
			// Claims its reviews identity served another service: dropped.
			statsSeries(window.ReporterDestination, statsPage, statsReviews, "payments", 1000, 0),
			// Its productpage sidecar called reviews: kept.
			statsSeries(window.ReporterSource, statsPage, statsReviews, "reviews", 10, 1),
			// Claims ratings called reviews: dropped.
			statsSeries(window.ReporterSource, statsOther, statsReviews, "reviews", 1000, 0),
		},
		Denials: []*agentv1.StatsDenial{
			{UnixNanos: now.UnixNano(), SourcePrincipal: statsOther, DestinationPrincipal: statsReviews, DestinationNamespace: "default", DestinationService: "reviews", Method: "GET", Path: "/admin"},
			{UnixNanos: now.UnixNano(), SourcePrincipal: statsPage, DestinationPrincipal: statsOther, DestinationNamespace: "default", DestinationService: "ratings", Method: "GET", Path: "/forged"},
		},
		Proxies: []*agentv1.Proxy{
			{Id: "r1", SpiffeId: statsReviews, Service: "reviews"},
			{Id: "x1", SpiffeId: statsOther, Service: "ratings"},
		},
	}
	if err := s.acceptStats(ctx, agent1, rep); err != nil {
		t.Fatal(err)
	}
	now = now.Add(window.Resolution)
	for kind, want := range map[string]string{adminv1.StatService: "reviews 10/1 meshed 1", adminv1.StatSubset: "reviews 10/1 meshed 1"} {
		resp, err := s.stats.Stats(ctx, adminv1.StatQuery{Kind: kind})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Overflow != 4 {
			t.Errorf("%s: overflow %d, want the report's 4", kind, resp.Overflow)
		}
		var got []string
		for _, r := range resp.Rows {
			got = append(got, r.Name+" "+itoa(r.Requests)+"/"+itoa(r.Failures)+" meshed "+itoa(uint64(r.Meshed)))
		}
		if strings.Join(got, ", ") != want {
			t.Errorf("%s rows %v, want %s", kind, got, want)
		}
	}
	d, err := s.stats.Denials(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Denials) != 1 || d.Denials[0].Path != "/admin" {
		t.Errorf("denials %+v, want only /admin", d.Denials)
	}

	bad := &agentv1.StatsReport{EndUnixNanos: now.UnixNano(), IntervalMillis: 10000, Series: []*agentv1.StatsSeries{statsSeries("both", statsPage, statsReviews, "reviews", 1, 0)}}
	err = s.acceptStats(ctx, agent1, bad)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "reporter") {
		t.Errorf("malformed report: %v, want InvalidArgument naming the reporter", err)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// The admin API answers stats, edges and denials from the window, and
// refuses bad queries with a 400 naming what was wrong.
func TestStatsAdminAPI(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := statsServer(t, &now)
	now = now.Add(time.Minute)
	rep := &agentv1.StatsReport{EndUnixNanos: now.UnixNano(), IntervalMillis: 10000,
		Series:  []*agentv1.StatsSeries{statsSeries(window.ReporterDestination, statsPage, statsReviews, "reviews", 100, 10)},
		Denials: []*agentv1.StatsDenial{{UnixNanos: now.UnixNano(), DestinationPrincipal: statsReviews, DestinationNamespace: "default", DestinationService: "reviews", Path: "/x"}},
	}
	if err := s.acceptStats(context.Background(), agent1, rep); err != nil {
		t.Fatal(err)
	}
	now = now.Add(window.Resolution)
	h := s.adminHandler()
	for _, tc := range []struct {
		path   string
		status int
		want   string
	}{
		{"/v1/stats", 200, `"name":"reviews"`},
		{"/v1/stats?kind=service&namespace=default&name=reviews&window=10s", 200, `"rps":10`},
		{"/v1/stats?kind=workload", 200, `"name":"` + statsReviews + `"`},
		{"/v1/stats?namespace=prod", 200, `"rows":[]`},
		{"/v1/stats?kind=pods", 400, `kind \"pods\" is not one of`},
		{"/v1/stats?window=15s", 400, "window 15s is not a multiple of 10s"},
		{"/v1/stats?window=1h", 400, "window 1h0m0s is not a multiple of 10s between 10s and 15m0s"},
		{"/v1/stats?window=soon", 400, `window \"soon\" is not a positive duration`},
		{"/v1/stats?color=red", 400, `unknown query parameter \"color\"`},
		{"/v1/edges", 200, `"source":"` + statsPage + `"`},
		{"/v1/edges?kind=route", 400, "edges take namespace and window only"},
		{"/v1/denials?limit=1", 200, `"path":"/x"`},
		{"/v1/denials?limit=many", 400, "limit"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
			t.Errorf("GET %s: %d %s, want %d with %s", tc.path, rec.Code, rec.Body.String(), tc.status, tc.want)
		}
	}
}
