package window

import (
	"context"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzStoreAdd: any report an agent can send (as protobuf bytes) is
// either refused with ErrBadReport or merged; either way every kind of
// query still answers, with no row failing more requests than it has.
func FuzzStoreAdd(f *testing.F) {
	at := start.Add(time.Minute)
	seeds := []*agentv1.StatsReport{
		report(at, series(ReporterDestination, productpage, reviewsV1, "reviews", "", "", 10, 1, time.Millisecond),
			series(ReporterSource, productpage, reviewsV1, "reviews", "v1", "canary", 10, 1, 3*time.Millisecond)),
		{EndUnixNanos: at.UnixNano(), IntervalMillis: 10000, Series: []*agentv1.StatsSeries{{Key: &agentv1.StatsKey{Reporter: "source", Protocol: "tcp", DestinationNamespace: "a", DestinationService: "b"}, TcpOpened: 3, BytesSent: 9}},
			Proxies: []*agentv1.Proxy{{Id: "x", SpiffeId: reviewsV1, Service: "reviews", Namespace: "default"}},
			Denials: []*agentv1.StatsDenial{{UnixNanos: 1, Path: "/a", DestinationNamespace: "default"}}},
		{EndUnixNanos: at.UnixNano(), IntervalMillis: 10000, Series: []*agentv1.StatsSeries{{Key: &agentv1.StatsKey{Reporter: "destination", Protocol: "http", DestinationNamespace: "a", DestinationService: "b"},
			Requests: 3, BucketIndex: []uint32{5, 5, 200}, BucketCount: []uint64{1, 2, 3}}}},
	}
	for _, r := range seeds {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r agentv1.StatsReport
		if proto.Unmarshal(data, &r) != nil {
			return
		}
		s, clk := newStore(t, Config{MaxKeys: 100, MaxDenials: 10})
		clk.Advance(time.Minute)
		for range 2 { // the second time merges into existing records
			if _, err := s.Add(agentA, &r); err != nil {
				break
			}
		}
		clk.Advance(Resolution)
		for _, kind := range []string{adminv1.StatService, adminv1.StatSubset, adminv1.StatWorkload, adminv1.StatRoute} {
			resp, err := s.Stats(context.Background(), adminv1.StatQuery{Kind: kind, Window: DefaultSpan})
			if err != nil {
				t.Fatal(err)
			}
			for _, row := range resp.Rows {
				if row.Failures > row.Requests {
					t.Fatalf("%s row %+v fails more than it has", kind, row)
				}
			}
		}
		if _, err := s.Edges(context.Background(), adminv1.StatQuery{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Denials(context.Background(), "", 0); err != nil {
			t.Fatal(err)
		}
	})
}
