package dashboard

import (
	"context"
	"sync"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/ca"
)

// fakeStats stands in for the server's telemetry store (another package,
// built on its own branch): it answers the same three calls from fixed
// rows, filtering as the store does, and records the queries it got.
type fakeStats struct {
	mu      sync.Mutex
	rows    []adminv1.StatRow
	edges   []adminv1.Edge
	denials []adminv1.Denial
	err     error
	queries []adminv1.StatQuery
}

// windows returns the windows of the queries so far.
func (f *fakeStats) windows() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Duration
	for _, q := range f.queries {
		out = append(out, q.Window)
	}
	return out
}

func (f *fakeStats) Stats(_ context.Context, q adminv1.StatQuery) (adminv1.StatResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	if f.err != nil {
		return adminv1.StatResponse{}, f.err
	}
	kind := q.Kind
	if kind == "" {
		kind = adminv1.StatService
	}
	out := adminv1.StatResponse{Window: q.Window, Resolution: 10 * time.Second}
	for _, r := range f.rows {
		if r.Kind == kind && (q.Namespace == "" || r.Namespace == q.Namespace) && (q.Name == "" || r.Name == q.Name) {
			out.Rows = append(out.Rows, r)
		}
	}
	return out, nil
}

func (f *fakeStats) Edges(_ context.Context, q adminv1.StatQuery) (adminv1.EdgesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	if f.err != nil {
		return adminv1.EdgesResponse{}, f.err
	}
	out := adminv1.EdgesResponse{Window: q.Window}
	for _, e := range f.edges {
		if q.Namespace == "" || e.DestinationNamespace == q.Namespace {
			out.Edges = append(out.Edges, e)
		}
	}
	return out, nil
}

func (f *fakeStats) Denials(_ context.Context, ns string, limit int) (adminv1.DenialsResponse, error) {
	if f.err != nil {
		return adminv1.DenialsResponse{}, f.err
	}
	var out adminv1.DenialsResponse
	for _, d := range f.denials {
		if (ns == "" || d.Namespace == ns) && len(out.Denials) < limit {
			out.Denials = append(out.Denials, d)
		}
	}
	return out, nil
}

// fakeInventory stands in for the server's registry and CA.
type fakeInventory struct {
	services []adminv1.ServiceInfo
	ids      Identities
	splits   []Split
}

func (f *fakeInventory) Services(context.Context) ([]adminv1.ServiceInfo, error) {
	return f.services, nil
}

func (f *fakeInventory) Identities(context.Context) (Identities, error) { return f.ids, nil }

func (f *fakeInventory) Splits(_ context.Context, ns string) ([]Split, error) {
	var out []Split
	for _, s := range f.splits {
		if ns == "" || s.Namespace == ns {
			out = append(out, s)
		}
	}
	return out, nil
}

func ptr(f float64) *float64 { return &f }

const (
	webID  = "spiffe://example.org/ns/default/sa/web"
	apiID  = "spiffe://example.org/ns/default/sa/api"
	curlID = "spiffe://example.org/ns/tools/sa/curl"
)

var testNow = time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)

// meshFixture is a mesh of web → api (v1 90 %, v2 10 %, v2 failing 20 %)
// and a client outside any service calling web, with a <script> in a
// path to show nothing is rendered as markup.
func meshFixture() (*fakeStats, *fakeInventory) {
	g := func(req, fail uint64, p99 float64) adminv1.Golden {
		sr := float64(req-fail) / float64(req)
		return adminv1.Golden{Requests: req, Failures: fail, SuccessRate: &sr, RPS: float64(req) / 60, P50: ptr(p99 / 4), P95: ptr(p99 / 2), P99: ptr(p99)}
	}
	stats := &fakeStats{
		rows: []adminv1.StatRow{
			{Kind: adminv1.StatService, Namespace: "default", Name: "api", Meshed: 2, Golden: g(600, 12, 40)},
			{Kind: adminv1.StatService, Namespace: "default", Name: "web", Meshed: 1, Golden: g(600, 0, 80)},
			{Kind: adminv1.StatSubset, Namespace: "default", Name: "api", Subset: "v1", Meshed: 1, Golden: g(540, 0, 30)},
			{Kind: adminv1.StatSubset, Namespace: "default", Name: "api", Subset: "v2", Meshed: 1, Golden: g(60, 12, 90)},
			{Kind: adminv1.StatRoute, Namespace: "default", Name: "api", Route: "canary", Meshed: 2, Golden: g(600, 12, 40)},
		},
		edges: []adminv1.Edge{
			{Source: webID, DestinationNamespace: "default", DestinationService: "api", Destination: apiID, Golden: g(600, 12, 40)},
			{Source: curlID, DestinationNamespace: "default", DestinationService: "web", Destination: webID, Golden: g(600, 0, 80)},
		},
		denials: []adminv1.Denial{
			{Time: testNow.Add(-time.Minute), Source: curlID, Destination: apiID, Namespace: "default", Service: "api", Method: "POST", Path: "/admin/<script>x</script>", DecisionID: "d-1"},
		},
	}
	inv := &fakeInventory{
		services: []adminv1.ServiceInfo{
			{Name: "api", Namespace: "default", Endpoints: 2, Identities: []string{apiID}},
			{Name: "web", Namespace: "default", Endpoints: 1, Identities: []string{webID}},
			{Name: "idle", Namespace: "staging", Endpoints: 1, Identities: []string{"spiffe://example.org/ns/staging/sa/idle"}},
		},
		ids: Identities{
			SVIDs: []SVID{
				{SPIFFEID: apiID, Kind: SVIDWorkload, Agent: "spiffe://example.org/sigil/agent/join_token/node1", Node: "node1", Serial: "ab12", NotAfter: testNow.Add(30 * time.Minute), Services: []string{"api.default"}},
				{SPIFFEID: "spiffe://example.org/sigil/server", Kind: SVIDServer, Serial: "cd34", NotAfter: testNow.Add(time.Hour)},
			},
			Authorities: []ca.AuthorityStatus{
				{ID: 1, Kind: ca.KindRoot, Status: ca.StatusActive, NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(8759 * time.Hour), PrepareNextAt: testNow.Add(4379 * time.Hour), ActivateNextAt: testNow.Add(7299 * time.Hour)},
				{ID: 2, Kind: ca.KindIntermediate, Status: ca.StatusActive, NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(23 * time.Hour), PrepareNextAt: testNow.Add(11 * time.Hour), ActivateNextAt: testNow.Add(19 * time.Hour)},
			},
			BundleSequence: 3,
		},
		splits: []Split{{
			Namespace: "default", VirtualService: "api", Route: "canary", Hosts: []string{"api"},
			Destinations: []Destination{{Namespace: "default", Service: "api", Subset: "v1", Weight: 90}, {Namespace: "default", Service: "api", Subset: "v2", Weight: 10}},
		}},
	}
	return stats, inv
}
