package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/telemetry/window"
)

// The server's golden-metrics window for 1000 workloads, filled for its
// whole span by simulated agents (issue 14: at most 100 MB).
const (
	simNamespaces  = 10
	simServices    = 250 // over all namespaces
	simSubsets     = 4   // a workload identity per subset: 1000 workloads
	simNodes       = 100 // agents, 10 workloads each
	simCallees     = 3   // services each workload calls
	simSplit       = 2   // subsets a route splits a callee's traffic over
	simBucketsUsed = 12  // latency buckets each series fills per interval
)

type simWorkload struct {
	ns, svc, subset, id string
	calls               []int // callee services
}

// simMesh returns the workloads, workload w on node w % simNodes.
func simMesh(r *rand.Rand) []simWorkload {
	var ws []simWorkload
	for s := 0; s < simServices; s++ {
		ns := fmt.Sprintf("ns-%d", s%simNamespaces)
		for v := 1; v <= simSubsets; v++ {
			w := simWorkload{ns: ns, svc: fmt.Sprintf("svc-%d", s), subset: fmt.Sprintf("v%d", v),
				id: fmt.Sprintf("spiffe://example.org/ns/%s/sa/svc-%d-v%d", ns, s, v)}
			for c := 0; c < simCallees; c++ {
				w.calls = append(w.calls, r.IntN(simServices))
			}
			ws = append(ws, w)
		}
	}
	return ws
}

func simSeries(r *rand.Rand, reporter, src, dst, ns, svc, subset, route, proto string) *agentv1.StatsSeries {
	se := &agentv1.StatsSeries{Key: &agentv1.StatsKey{Reporter: reporter, SourcePrincipal: src, DestinationPrincipal: dst,
		DestinationNamespace: ns, DestinationService: svc, DestinationSubset: subset, Route: route, Protocol: proto}}
	if proto == "tcp" {
		se.TcpOpened, se.TcpClosed, se.BytesSent, se.BytesReceived = 4, 4, 1<<20, 1<<16
		return se
	}
	base := 20 + r.IntN(10)
	for b := base; b < base+simBucketsUsed; b++ {
		n := uint64(1 + r.IntN(100))
		se.BucketIndex, se.BucketCount = append(se.BucketIndex, uint32(b)), append(se.BucketCount, n)
		se.Requests += n
	}
	se.Failures = se.Requests / 100
	return se
}

// simReports returns each node's report for one interval: for every
// workload on it, a source series per callee and subset and one opaque
// TCP series; for every call into one of its workloads, a destination
// series; its sidecars; a denial now and then.
func simReports(r *rand.Rand, ws []simWorkload, end time.Time) []*agentv1.StatsReport {
	reps := make([]*agentv1.StatsReport, simNodes)
	for i := range reps {
		reps[i] = &agentv1.StatsReport{EndUnixNanos: end.UnixNano(), IntervalMillis: 10000}
	}
	for wi, w := range ws {
		rep := reps[wi%simNodes]
		rep.Proxies = append(rep.Proxies, &agentv1.Proxy{Id: fmt.Sprint(wi), SpiffeId: w.id, Service: w.svc, Namespace: w.ns})
		for _, c := range w.calls {
			for k := 0; k < simSplit; k++ {
				di := c*simSubsets + (wi+k)%simSubsets
				d := ws[di]
				route := "route-" + d.svc
				rep.Series = append(rep.Series, simSeries(r, window.ReporterSource, w.id, d.id, d.ns, d.svc, d.subset, route, "http"))
				dst := reps[di%simNodes]
				dst.Series = append(dst.Series, simSeries(r, window.ReporterDestination, w.id, d.id, d.ns, d.svc, "", "", "http"))
			}
		}
		rep.Series = append(rep.Series, simSeries(r, window.ReporterDestination, "", w.id, w.ns, w.svc, "", "", "tcp"))
		if r.IntN(10) == 0 {
			rep.Denials = append(rep.Denials, &agentv1.StatsDenial{UnixNanos: end.UnixNano(), SourcePrincipal: ws[r.IntN(len(ws))].id,
				DestinationPrincipal: w.id, DestinationNamespace: w.ns, DestinationService: w.svc, Method: "GET", Path: "/admin", DecisionId: "d"})
		}
	}
	return reps
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// BenchmarkStatsWindow1000Workloads fills a window's whole span (15
// minutes, 91 slots) with 1000 workloads' reports from 100 simulated
// agents, then reports the heap it holds (heap-MB, the bound is
// 100), the keys, and what one `sigil stat` query of the whole span costs
// (ns/op).
func BenchmarkStatsWindow1000Workloads(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	ws := simMesh(r)
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	before := heapInUse()
	st, err := window.New(window.Config{Now: clock})
	if err != nil {
		b.Fatal(err)
	}
	agents := make([]string, simNodes)
	for i := range agents {
		agents[i] = fmt.Sprintf("spiffe://example.org/sigil/agent/join_token/node-%d", i)
	}
	slots := int(window.DefaultSpan/window.Resolution) + 1
	var series int
	for s := 0; s < slots; s++ {
		now = now.Add(window.Resolution)
		for i, rep := range simReports(r, ws, now.Add(-time.Second)) {
			series += len(rep.Series)
			if _, err := st.Add(agents[i], rep); err != nil {
				b.Fatal(err)
			}
		}
	}
	held := heapInUse() - before
	if st.Dropped() != 0 {
		b.Fatalf("%d series dropped at the key bound", st.Dropped())
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		resp, err := st.Stats(ctx, adminv1.StatQuery{Window: window.DefaultSpan})
		if err != nil || len(resp.Rows) != simServices {
			b.Fatalf("%d rows, %v", len(resp.Rows), err)
		}
	}
	// Reported after the timed loop: ResetTimer deletes reported metrics.
	b.ReportMetric(float64(held)/(1<<20), "heap-MB")
	b.ReportMetric(float64(st.Keys()), "keys")
	b.ReportMetric(float64(series/slots), "series/interval")
	runtime.KeepAlive(st)
}
