package window

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/telemetry"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// start is a slot boundary.
var start = time.Unix(1_800_000_000, 0)

func newStore(t *testing.T, cfg Config) (*Store, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: start}
	cfg.Now = clk.Now
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

const (
	productpage = "spiffe://example.org/ns/default/sa/productpage"
	reviewsV1   = "spiffe://example.org/ns/default/sa/reviews-v1"
	reviewsV2   = "spiffe://example.org/ns/default/sa/reviews-v2"
	agentA      = "spiffe://example.org/sigil/agent/join_token/a"
	agentB      = "spiffe://example.org/sigil/agent/join_token/b"
)

// series builds a series of n requests, failed of them failing, each
// with latency lat.
func series(reporter, src, dst, svc, subset, route string, n, failed uint64, lat time.Duration) *agentv1.StatsSeries {
	return &agentv1.StatsSeries{
		Key: &agentv1.StatsKey{Reporter: reporter, SourcePrincipal: src, DestinationPrincipal: dst, DestinationNamespace: "default",
			DestinationService: svc, DestinationSubset: subset, Route: route, Protocol: "http"},
		Requests: n, Failures: failed,
		BucketIndex: []uint32{uint32(telemetry.Bucket(lat))}, BucketCount: []uint64{n},
	}
}

func report(end time.Time, ss ...*agentv1.StatsSeries) *agentv1.StatsReport {
	return &agentv1.StatsReport{EndUnixNanos: end.UnixNano(), IntervalMillis: 10000, Series: ss}
}

func mustAdd(t *testing.T, s *Store, agent string, r *agentv1.StatsReport) {
	t.Helper()
	if _, err := s.Add(agent, r); err != nil {
		t.Fatal(err)
	}
}

func stats(t *testing.T, s *Store, q adminv1.StatQuery) []adminv1.StatRow {
	t.Helper()
	resp, err := s.Stats(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Rows
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// Series of one key from two agents add up; each kind reads its reporter:
// service and workload rows the destinations', subset and route rows the
// sources'.
func TestWindowMergesReportsByKind(t *testing.T) {
	s, clk := newStore(t, Config{})
	clk.Advance(60 * time.Second)
	at := clk.Now().Add(-5 * time.Second)
	// Node a: productpage's sidecar (source) and reviews-v1's (destination).
	mustAdd(t, s, agentA, report(at,
		series(ReporterSource, productpage, reviewsV1, "reviews", "v1", "canary", 90, 9, 10*time.Millisecond),
		series(ReporterSource, productpage, reviewsV2, "reviews", "v2", "canary", 10, 5, 20*time.Millisecond),
		series(ReporterDestination, productpage, reviewsV1, "reviews", "", "", 90, 9, 10*time.Millisecond)))
	// Node b: reviews-v2's sidecar, and a second v1 replica of the same
	// identity whose series shares node a's key.
	mustAdd(t, s, agentB, report(at,
		series(ReporterDestination, productpage, reviewsV2, "reviews", "", "", 10, 5, 20*time.Millisecond),
		series(ReporterDestination, productpage, reviewsV1, "reviews", "", "", 100, 0, 10*time.Millisecond)))
	clk.Advance(10 * time.Second) // the slot is complete

	type want struct {
		name, subset, route string
		requests, failures  uint64
	}
	for _, tc := range []struct {
		kind string
		want []want
	}{
		{adminv1.StatService, []want{{"reviews", "", "", 200, 14}}},
		{"", []want{{"reviews", "", "", 200, 14}}},
		{adminv1.StatSubset, []want{{"reviews", "v1", "", 90, 9}, {"reviews", "v2", "", 10, 5}}},
		{adminv1.StatRoute, []want{{"reviews", "", "canary", 100, 14}}},
		{adminv1.StatWorkload, []want{{reviewsV1, "", "", 190, 9}, {reviewsV2, "", "", 10, 5}}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			rows := stats(t, s, adminv1.StatQuery{Kind: tc.kind, Window: time.Minute})
			if len(rows) != len(tc.want) {
				t.Fatalf("rows %+v, want %d", rows, len(tc.want))
			}
			for i, w := range tc.want {
				r := rows[i]
				if r.Name != w.name || r.Subset != w.subset || r.Route != w.route || r.Requests != w.requests || r.Failures != w.failures {
					t.Errorf("row %d = %s/%s/%s %d/%d, want %+v", i, r.Name, r.Subset, r.Route, r.Requests, r.Failures, w)
				}
				if !near(r.RPS, float64(w.requests)/60) {
					t.Errorf("row %d RPS %v, want %v", i, r.RPS, float64(w.requests)/60)
				}
				if r.SuccessRate == nil || !near(*r.SuccessRate, float64(w.requests-w.failures)/float64(w.requests)) {
					t.Errorf("row %d success rate %v", i, r.SuccessRate)
				}
			}
		})
	}
	edges, err := s.Edges(context.Background(), adminv1.StatQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(edges.Edges) != 2 || edges.Edges[0].Destination != reviewsV1 || edges.Edges[0].Requests != 190 || edges.Edges[1].Destination != reviewsV2 || edges.Edges[1].Source != productpage {
		t.Errorf("edges %+v", edges.Edges)
	}
}

// Percentiles come from the merged histogram: two agents' halves of one
// key, one fast and one slow, give a p50 from the fast half and a p99
// from the slow one, which no average of per-agent percentiles gives.
func TestWindowPercentilesFromMergedHistograms(t *testing.T) {
	s, clk := newStore(t, Config{})
	clk.Advance(30 * time.Second)
	at := clk.Now()
	mustAdd(t, s, agentA, report(at, series(ReporterDestination, productpage, reviewsV1, "reviews", "", "", 900, 0, 2*time.Millisecond)))
	slow := report(at, series(ReporterDestination, productpage, reviewsV1, "reviews", "", "", 100, 0, 300*time.Millisecond))
	slow.Overflow = 7
	mustAdd(t, s, agentB, slow)
	clk.Advance(10 * time.Second)
	resp, err := s.Stats(context.Background(), adminv1.StatQuery{Window: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rows := resp.Rows
	if len(rows) != 1 {
		t.Fatalf("rows %+v", rows)
	}
	if resp.Overflow != 7 {
		t.Errorf("overflow %d, want the reports' 7", resp.Overflow)
	}
	ms := func(d time.Duration) float64 {
		return float64(telemetry.UpperBound(telemetry.Bucket(d))) / float64(time.Millisecond)
	}
	r := rows[0]
	for _, c := range []struct {
		name string
		got  *float64
		want float64
	}{{"p50", r.P50, ms(2 * time.Millisecond)}, {"p95", r.P95, ms(300 * time.Millisecond)}, {"p99", r.P99, ms(300 * time.Millisecond)}} {
		if c.got == nil || !near(*c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if !near(r.RPS, 100) {
		t.Errorf("RPS %v, want 100", r.RPS)
	}
}

// The window slides with the clock: a query covers the complete slots of
// its window; a slot being filled waits until it is complete, and counts
// older than the span are gone, their keys forgotten.
func TestWindowSlidesWithClock(t *testing.T) {
	s, clk := newStore(t, Config{Span: time.Minute})
	clk.Advance(5 * time.Minute)
	add := func() {
		mustAdd(t, s, agentA, report(clk.Now(), series(ReporterDestination, productpage, reviewsV1, "reviews", "", "", 10, 1, time.Millisecond)))
	}
	requests := func(w time.Duration) uint64 {
		var n uint64
		for _, r := range stats(t, s, adminv1.StatQuery{Window: w}) {
			n += r.Requests
		}
		return n
	}
	add()
	if got := requests(time.Minute); got != 0 {
		t.Fatalf("the slot being filled counted: %d", got)
	}
	clk.Advance(10 * time.Second)
	if got := requests(10 * time.Second); got != 10 {
		t.Fatalf("after its slot completed: %d, want 10", got)
	}
	for i := 0; i < 3; i++ {
		add()
		clk.Advance(10 * time.Second)
	}
	if got, want := requests(20*time.Second), uint64(20); got != want {
		t.Errorf("20s window: %d, want %d", got, want)
	}
	if got, want := requests(time.Minute), uint64(40); got != want {
		t.Errorf("1m window: %d, want %d", got, want)
	}
	clk.Advance(50 * time.Second)
	if got, want := requests(time.Minute), uint64(10); got != want {
		t.Errorf("1m window after 50s: %d, want %d", got, want)
	}
	clk.Advance(20 * time.Second)
	if got := requests(time.Minute); got != 0 {
		t.Errorf("counts older than the span remain: %d", got)
	}
	if s.Keys() != 0 {
		t.Errorf("%d keys remain after their counts left the window", s.Keys())
	}
	// A report older than the window, or too far in the future, is refused.
	for _, end := range []time.Time{clk.Now().Add(-2 * time.Minute), clk.Now().Add(MaxSkew + time.Second)} {
		if _, err := s.Add(agentA, report(end, series(ReporterDestination, productpage, reviewsV1, "reviews", "", "", 1, 0, time.Millisecond))); !errors.Is(err, ErrBadReport) {
			t.Errorf("report ending %v: error %v, want ErrBadReport", end.Sub(clk.Now()), err)
		}
	}
}

// The rate is over the time the store has listened: a server started 30 s
// ago reports a one-minute window's requests over 30 s, not 60.
func TestWindowRateSinceStart(t *testing.T) {
	s, clk := newStore(t, Config{})
	clk.Advance(25 * time.Second)
	mustAdd(t, s, agentA, report(clk.Now(), series(ReporterDestination, productpage, reviewsV1, "reviews", "", "", 300, 0, time.Millisecond)))
	clk.Advance(5 * time.Second)
	resp, err := s.Stats(context.Background(), adminv1.StatQuery{Window: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if rows := resp.Rows; len(rows) != 1 || !near(rows[0].RPS, 10) {
		t.Fatalf("rows %+v, want one at 10 rps", rows)
	}
	// The window ends where its last complete slot does.
	if want := start.Add(30 * time.Second); !resp.End.Equal(want) || resp.Window != time.Minute {
		t.Errorf("window %v ending %v, want 1m ending %v", resp.Window, resp.End, want)
	}
}

// Meshed counts the distinct sidecars that reported in the window, also
// for services without traffic.
func TestWindowMeshed(t *testing.T) {
	s, clk := newStore(t, Config{})
	clk.Advance(time.Minute)
	r := report(clk.Now(), series(ReporterDestination, productpage, reviewsV1, "reviews", "", "", 5, 0, time.Millisecond))
	r.Proxies = []*agentv1.Proxy{
		{Id: "r1", SpiffeId: reviewsV1, Service: "reviews", Namespace: "default"},
		{Id: "r2", SpiffeId: reviewsV1, Service: "reviews", Namespace: "default"},
		{Id: "p1", SpiffeId: productpage, Service: "productpage", Namespace: "default"},
	}
	mustAdd(t, s, agentA, r)
	clk.Advance(10 * time.Second)
	mustAdd(t, s, agentA, r) // the same sidecars again: still three
	r.Proxies = r.Proxies[:1]
	mustAdd(t, s, agentB, r) // another node's r1 is another sidecar
	clk.Advance(10 * time.Second)
	rows := stats(t, s, adminv1.StatQuery{})
	got := map[string]int{}
	for _, row := range rows {
		got[row.Name] = row.Meshed
	}
	if len(rows) != 2 || got["reviews"] != 3 || got["productpage"] != 1 {
		t.Errorf("meshed %v (rows %+v), want reviews 3, productpage 1", got, rows)
	}
	rows = stats(t, s, adminv1.StatQuery{Kind: adminv1.StatWorkload, Name: reviewsV1})
	if len(rows) != 1 || rows[0].Meshed != 3 || rows[0].Requests != 15 {
		t.Errorf("workload rows %+v", rows)
	}
}

// The bounds hold: keys beyond MaxKeys are dropped and counted, denials
// beyond MaxDenials push out the oldest, and a histogram keeps only the
// buckets that counted.
func TestWindowCaps(t *testing.T) {
	s, clk := newStore(t, Config{MaxKeys: 2, MaxDenials: 3})
	clk.Advance(time.Minute)
	dropped, err := s.Add(agentA, report(clk.Now(),
		series(ReporterDestination, productpage, reviewsV1, "reviews", "", "", 1, 0, time.Millisecond),
		series(ReporterDestination, productpage, reviewsV2, "reviews", "", "", 1, 0, time.Millisecond),
		series(ReporterDestination, reviewsV1, productpage, "productpage", "", "", 1, 0, time.Millisecond)))
	if err != nil || dropped != 1 || s.Keys() != 2 || s.Dropped() != 1 {
		t.Errorf("Add: %d dropped, %v; keys %d dropped in all %d, want 1, 2 and 1", dropped, err, s.Keys(), s.Dropped())
	}
	r := report(clk.Now())
	for i := 0; i < 5; i++ {
		ns := "default"
		if i%2 == 1 {
			ns = "prod"
		}
		r.Denials = append(r.Denials, &agentv1.StatsDenial{UnixNanos: int64(i), DestinationNamespace: ns, Path: "/" + string(rune('a'+i))})
	}
	mustAdd(t, s, agentA, r)
	for _, tc := range []struct {
		ns    string
		limit int
		want  string
	}{{"", 0, "/e /d /c"}, {"", 2, "/e /d"}, {"prod", 0, "/d"}, {"default", 5, "/e /c"}} {
		got, err := s.Denials(context.Background(), tc.ns, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, d := range got.Denials {
			paths = append(paths, d.Path)
		}
		if strings.Join(paths, " ") != tc.want {
			t.Errorf("Denials(%q, %d) = %v, want %s", tc.ns, tc.limit, paths, tc.want)
		}
	}
}

// A record keeps what was merged into it: counts, and only the buckets
// that counted, whatever order they came in; records that grow move and
// the slot's arena is compacted, keeping every other record.
func TestWindowRecords(t *testing.T) {
	var c counts
	c.addSeries(&agentv1.StatsSeries{Requests: 5, Failures: 1, TcpOpened: 2, BytesSent: 1 << 40, BytesReceived: 7,
		BucketIndex: []uint32{7, 3, 100, 0}, BucketCount: []uint64{2, 2, 1 << 50, 0}})
	c.addSeries(&agentv1.StatsSeries{Requests: 1, BucketIndex: []uint32{3}, BucketCount: []uint64{1}})
	var back counts
	rec := c.encode(nil)
	if n := back.decode(append(rec, 0xff, 0xff)); n != len(rec) {
		t.Errorf("decode read %d bytes of a %d-byte record", n, len(rec))
	}
	var dense [telemetry.NumBuckets]uint64
	back.addTo(&dense)
	if back.requests != 6 || back.failures != 1 || back.tcpOpened != 2 || back.bytesSent != 1<<40 || back.bytesReceived != 7 ||
		len(back.hist) != 3 || dense[3] != 3 || dense[7] != 2 || dense[100] != 1<<50 {
		t.Errorf("decoded %+v", back)
	}

	s, clk := newStore(t, Config{})
	clk.Advance(time.Minute)
	var ss []*agentv1.StatsSeries
	for i := 0; i < 3000; i++ {
		ss = append(ss, series(ReporterDestination, productpage, reviewsV1, fmt.Sprintf("svc-%d", i), "", "", 1, 0, time.Millisecond))
	}
	for round := 0; round < 40; round++ {
		// Each round adds a bucket to every record: each grows and moves.
		for i, se := range ss {
			se.BucketIndex[0] = uint32(round)
			se.BucketCount[0] = 1
			ss[i] = se
		}
		mustAdd(t, s, agentA, report(clk.Now(), ss...))
	}
	clk.Advance(10 * time.Second)
	rows := stats(t, s, adminv1.StatQuery{Window: 10 * time.Second})
	if len(rows) != 3000 {
		t.Fatalf("%d rows, want 3000", len(rows))
	}
	for _, r := range rows {
		if r.Requests != 40 || r.P50 == nil || *r.P50 != float64(telemetry.UpperBound(19))/1e6 {
			t.Fatalf("row %+v after 40 merges, want 40 requests with p50 at bucket 19", r)
		}
	}
	sl := &s.slots[slotNumber(clk.Now().Add(-time.Second))%int64(len(s.slots))]
	if sl.garbage > 64<<10 && sl.garbage > len(sl.data)/2 {
		t.Errorf("arena not compacted: %d of %d bytes garbage", sl.garbage, len(sl.data))
	}
}

// Malformed reports and queries are refused whole with errors naming the
// field.
func TestWindowRefusesMalformed(t *testing.T) {
	s, clk := newStore(t, Config{})
	clk.Advance(time.Minute)
	good := func() *agentv1.StatsSeries {
		return series(ReporterDestination, productpage, reviewsV1, "reviews", "", "", 1, 0, time.Millisecond)
	}
	for _, tc := range []struct {
		name string
		edit func(r *agentv1.StatsReport)
		want string
	}{
		{"no end", func(r *agentv1.StatsReport) { r.EndUnixNanos = 0 }, "end_unix_nanos"},
		{"no interval", func(r *agentv1.StatsReport) { r.IntervalMillis = 0 }, "interval_millis"},
		{"unknown reporter", func(r *agentv1.StatsReport) { r.Series[0].Key.Reporter = "both" }, "reporter"},
		{"unknown protocol", func(r *agentv1.StatsReport) { r.Series[0].Key.Protocol = "udp" }, "protocol"},
		{"no key", func(r *agentv1.StatsReport) { r.Series[0].Key = nil }, "no key"},
		{"no service", func(r *agentv1.StatsReport) { r.Series[0].Key.DestinationService = "" }, "destination_service"},
		{"more failures", func(r *agentv1.StatsReport) { r.Series[0].Failures = 2 }, "failures"},
		{"histogram short", func(r *agentv1.StatsReport) { r.Series[0].Requests = 2 }, "the histogram holds 1 requests, the series 2"},
		{"count too large", func(r *agentv1.StatsReport) { r.Series[0].BytesSent = MaxCount + 1 }, "a count of"},
		{"bucket count too large", func(r *agentv1.StatsReport) {
			r.Series[0].Requests, r.Series[0].BucketCount[0] = MaxCount+1, MaxCount+1
		}, "a count of"},
		{"unpaired buckets", func(r *agentv1.StatsReport) { r.Series[0].BucketCount = nil }, "bucket indexes"},
		{"bucket beyond", func(r *agentv1.StatsReport) { r.Series[0].BucketIndex[0] = telemetry.NumBuckets }, "bucket index"},
		{"long field", func(r *agentv1.StatsReport) { r.Series[0].Key.Route = strings.Repeat("r", MaxFieldBytes+1) }, "bytes"},
		{"too many series", func(r *agentv1.StatsReport) {
			for len(r.Series) <= MaxSeriesPerReport {
				r.Series = append(r.Series, good())
			}
		}, "series"},
		{"too many denials", func(r *agentv1.StatsReport) { r.Denials = make([]*agentv1.StatsDenial, MaxDenialsPerReport+1) }, "denials"},
		{"too many proxies", func(r *agentv1.StatsReport) { r.Proxies = make([]*agentv1.Proxy, MaxProxiesPerReport+1) }, "proxies"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := report(clk.Now(), good())
			tc.edit(r)
			_, err := s.Add(agentA, r)
			if !errors.Is(err, ErrBadReport) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want ErrBadReport naming %q", err, tc.want)
			}
		})
	}
	if s.Keys() != 0 {
		t.Errorf("a refused report left %d keys", s.Keys())
	}
	// A host outside the mesh has no namespace: not malformed.
	outside := series(ReporterSource, productpage, "", "api.example.com", "", "", 1, 0, time.Millisecond)
	outside.Key.DestinationNamespace = ""
	mustAdd(t, s, agentA, report(clk.Now(), outside))
	for _, q := range []adminv1.StatQuery{{Kind: "pods"}, {Window: 15 * time.Second}, {Window: -10 * time.Second}, {Window: 16 * time.Minute}} {
		if _, err := s.Stats(context.Background(), q); !errors.Is(err, ErrBadQuery) {
			t.Errorf("Stats(%+v): error %v, want ErrBadQuery", q, err)
		}
	}
	if _, err := s.Edges(context.Background(), adminv1.StatQuery{Window: time.Second}); !errors.Is(err, ErrBadQuery) {
		t.Errorf("Edges with a 1s window: error %v, want ErrBadQuery", err)
	}
}
