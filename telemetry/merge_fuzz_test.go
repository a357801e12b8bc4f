package telemetry

import (
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzMergerAdd: whatever a sidecar sends on the Discovery stream, the
// agent's merge neither panics nor reports a series the server could not
// merge (a histogram that disagrees with its count, a bucket out of
// range, a key field out of bounds) or more than MaxDenials denials.
func FuzzMergerAdd(f *testing.F) {
	good, _ := proto.Marshal(&agentv1.StatsReport{Series: []*agentv1.StatsSeries{
		{Key: key("api").Proto(), Requests: 3, Failures: 1, BucketIndex: []uint32{4, 9}, BucketCount: []uint64{2, 1}},
	}, Denials: []*agentv1.StatsDenial{{UnixNanos: 1, Method: "GET", Path: "/admin", DecisionId: "d1"}}, Overflow: 2})
	bad, _ := proto.Marshal(&agentv1.StatsReport{Series: []*agentv1.StatsSeries{
		{Key: key("api").Proto(), Requests: 1, BucketIndex: []uint32{NumBuckets + 3}, BucketCount: []uint64{1}},
	}})
	f.Add(good)
	f.Add(bad)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var rep agentv1.StatsReport
		if proto.Unmarshal(data, &rep) != nil {
			return
		}
		m := Merger{Max: 8}
		m.Add(&rep, &agentv1.Proxy{Id: "p"})
		m.Add(&rep, nil)
		out := m.Take(time.Unix(0, 0), time.Second)
		if len(out.Denials) > MaxDenials || len(out.Series) > 8 {
			t.Fatalf("%d denials, %d series: past the bounds", len(out.Denials), len(out.Series))
		}
		for _, s := range out.Series {
			if err := checkSeries(s); err != nil {
				t.Fatalf("merged series %v: %v", s, err)
			}
		}
		for _, d := range out.Denials {
			if len(d.Path) > MaxDenialPath {
				t.Fatalf("denial path of %d bytes", len(d.Path))
			}
		}
	})
}
