package window

import (
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/telemetry"
)

// What a dry-run policy would have denied is counted per key from the
// sidecar's cell, through an agent's merge, into the server's window and
// the rows `sigil stat` shows.
func TestPolicyResourceDryRunDeniedInGoldenMetrics(t *testing.T) {
	rec := telemetry.NewRecorder(start)
	key := telemetry.Key{Reporter: ReporterDestination, SourcePrincipal: productpage, DestinationPrincipal: reviewsV1,
		DestinationNamespace: "default", DestinationService: "reviews", Protocol: "http"}
	c := rec.Cell(key)
	for i := range 5 {
		c.Request(time.Millisecond, false)
		if i < 3 {
			c.DryRunDenied()
		}
	}
	var m telemetry.Merger
	for range 2 { // two sidecars of one node, same key
		if err := m.Add(rec.Swap(start.Add(50*time.Second)), nil); err != nil {
			t.Fatal(err)
		}
		c.Request(time.Millisecond, false)
		c.DryRunDenied()
	}
	merged := m.Take(start.Add(55*time.Second), 10*time.Second)
	if n := len(merged.GetSeries()); n != 1 || merged.GetSeries()[0].GetDryrunDenied() != 4 {
		t.Fatalf("merged %v, want one series with dryrun_denied 4", merged.GetSeries())
	}
	s, clk := newStore(t, Config{})
	clk.Advance(60 * time.Second)
	mustAdd(t, s, agentA, merged)
	mustAdd(t, s, agentB, report(clk.Now().Add(-5*time.Second), &agentv1.StatsSeries{Key: merged.GetSeries()[0].GetKey(), DryrunDenied: 2}))
	clk.Advance(10 * time.Second)
	rows := stats(t, s, adminv1.StatQuery{Kind: adminv1.StatService, Window: time.Minute})
	if len(rows) != 1 || rows[0].DryRunDenied != 6 || rows[0].Requests != 6 {
		t.Fatalf("rows %+v, want reviews with 6 requests, 6 dry-run denied", rows)
	}
}
