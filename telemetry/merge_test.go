package telemetry

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"google.golang.org/protobuf/proto"
)

func series(svc string, buckets map[uint32]uint64, failures uint64) *agentv1.StatsSeries {
	s := &agentv1.StatsSeries{Key: key(svc).Proto(), Failures: failures}
	for b := range uint32(NumBuckets) {
		if n := buckets[b]; n > 0 {
			s.BucketIndex = append(s.BucketIndex, b)
			s.BucketCount = append(s.BucketCount, n)
			s.Requests += n
		}
	}
	return s
}

// TestMergerAddsReportsByKey: two sidecars' reports of the same key add
// up (counts and histogram buckets); other keys stay apart; the proxies
// are listed once each.
func TestMergerAddsReportsByKey(t *testing.T) {
	var m Merger
	a := &agentv1.StatsReport{Series: []*agentv1.StatsSeries{series("api", map[uint32]uint64{3: 2, 7: 1}, 1), series("db", map[uint32]uint64{1: 1}, 0)}, Overflow: 2}
	b := &agentv1.StatsReport{Series: []*agentv1.StatsSeries{series("api", map[uint32]uint64{7: 4, 9: 1}, 0)}, Overflow: 1}
	for i, rep := range []*agentv1.StatsReport{a, b, b} {
		if err := m.Add(rep, &agentv1.Proxy{Id: fmt.Sprint("p", i%2)}); err != nil {
			t.Fatal(err)
		}
	}
	rep := m.Take(t0, 10*time.Second)
	if len(rep.Series) != 2 || len(rep.Proxies) != 2 || rep.Overflow != 4 || rep.IntervalMillis != 10000 {
		t.Fatalf("report %v, want 2 series, 2 proxies, overflow 4", rep)
	}
	api := rep.Series[0]
	if KeyOf(api.Key).DestinationService != "api" || api.Requests != 13 || api.Failures != 1 {
		t.Errorf("api series %v, want 13 requests, 1 failure", api)
	}
	want := map[uint32]uint64{3: 2, 7: 9, 9: 2}
	for i, b := range api.BucketIndex {
		if api.BucketCount[i] != want[b] {
			t.Errorf("bucket %d: %d, want %d", b, api.BucketCount[i], want[b])
		}
	}
	if m.Len() != 0 || len(m.Take(t0, time.Second).Series) != 0 {
		t.Error("Take did not empty the merger")
	}
}

// TestMergerRefusesBadSeries: a histogram that disagrees with its count
// or names a bucket out of range is refused; the report's others count.
func TestMergerRefusesBadSeries(t *testing.T) {
	for name, bad := range map[string]*agentv1.StatsSeries{
		"bucket out of range":  {Key: key("x").Proto(), Requests: 1, BucketIndex: []uint32{NumBuckets}, BucketCount: []uint64{1}},
		"count disagrees":      {Key: key("x").Proto(), Requests: 5, BucketIndex: []uint32{1}, BucketCount: []uint64{1}},
		"lengths differ":       {Key: key("x").Proto(), Requests: 1, BucketIndex: []uint32{1, 2}, BucketCount: []uint64{1}},
		"more failures than n": {Key: key("x").Proto(), Requests: 1, Failures: 2, BucketIndex: []uint32{1}, BucketCount: []uint64{1}},
	} {
		t.Run(name, func(t *testing.T) {
			var m Merger
			err := m.Add(&agentv1.StatsReport{Series: []*agentv1.StatsSeries{bad, series("ok", map[uint32]uint64{1: 1}, 0)}}, nil)
			if !errors.Is(err, ErrBadSeries) {
				t.Errorf("Add: %v, want ErrBadSeries", err)
			}
			if rep := m.Take(t0, time.Second); len(rep.Series) != 1 || KeyOf(rep.Series[0].Key).DestinationService != "ok" {
				t.Errorf("series %v, want only ok's", rep.Series)
			}
		})
	}
}

// TestMergerCapsKeysAndDenials: beyond Max keys, series count as
// overflow; beyond MaxDenials, the most recent denials are kept.
func TestMergerCapsKeysAndDenials(t *testing.T) {
	m := Merger{Max: 2}
	rep := &agentv1.StatsReport{}
	for i := range 3 {
		rep.Series = append(rep.Series, series(fmt.Sprint("s", i), map[uint32]uint64{1: 5}, 0))
	}
	for i := range MaxDenials + 3 {
		rep.Denials = append(rep.Denials, &agentv1.StatsDenial{UnixNanos: int64(i), DecisionId: fmt.Sprint(i)})
	}
	if err := m.Add(rep, nil); err != nil {
		t.Fatal(err)
	}
	out := m.Take(t0, time.Second)
	if len(out.Series) != 2 || out.Overflow != 5 {
		t.Errorf("%d series, overflow %d; want 2 and 5", len(out.Series), out.Overflow)
	}
	if len(out.Denials) != MaxDenials || out.DenialsDropped != 3 || out.Denials[0].DecisionId != "3" {
		t.Errorf("%d denials from %s (%d dropped), want %d from 3 (3 dropped)", len(out.Denials), out.Denials[0].DecisionId, out.DenialsDropped, MaxDenials)
	}
}

// TestReportsStayUnderTheMessageLimit: however many keys, and however
// long their names, a report's series stay under MaxSeriesBytes (gRPC
// refuses a message over 4 MiB, which would cost the whole interval);
// what is left out counts as overflow.
func TestReportsStayUnderTheMessageLimit(t *testing.T) {
	long := strings.Repeat("x", MaxKeyName)
	m := Merger{Max: 100000}
	var sent uint64
	for i := range 6000 {
		k := Key{Reporter: "source", SourcePrincipal: "spiffe://td/" + strings.Repeat("p", 1000), DestinationService: fmt.Sprint(i), Route: long, DestinationSubset: long}
		s := series("x", map[uint32]uint64{1: 1, 5: 2, 60: 3}, 0)
		s.Key = k.Proto()
		sent += s.Requests
		if err := m.Add(&agentv1.StatsReport{Series: []*agentv1.StatsSeries{s}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	rep := m.Take(t0, time.Second)
	size := 0
	var counted uint64
	for _, s := range rep.Series {
		size += proto.Size(s)
		counted += s.Requests
	}
	if size > MaxSeriesBytes || proto.Size(rep) >= 4<<20 {
		t.Errorf("series of %d bytes (report %d), want at most %d", size, proto.Size(rep), MaxSeriesBytes)
	}
	if counted+rep.Overflow != sent || rep.Overflow == 0 {
		t.Errorf("%d requests in series + %d overflow, want %d in all, some overflowing", counted, rep.Overflow, sent)
	}
}
