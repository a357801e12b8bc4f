package telemetry

import (
	"fmt"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
)

var t0 = time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)

func key(svc string) Key {
	return Key{Reporter: "source", SourcePrincipal: "spiffe://td/ns/default/sa/web", DestinationNamespace: "default", DestinationService: svc, Protocol: "http"}
}

// TestRecorderCountsEveryRequestAcrossConcurrentSwaps: requests counted
// while Swap runs land in exactly one interval; none is lost or counted
// twice (run under -race), also for keys dropped and made anew meanwhile.
func TestRecorderCountsEveryRequestAcrossConcurrentSwaps(t *testing.T) {
	r := NewRecorder(t0)
	const workers, each = 4, 5000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var reports []*agentv1.StatsReport
	swapped := make(chan struct{})
	go func() {
		defer close(swapped)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			reports = append(reports, r.Swap(t0.Add(time.Duration(i)*time.Second)))
			// Far faster than any real interval, but not so fast that a
			// worker holds a cell across two swaps (Swap's sweep).
			time.Sleep(100 * time.Microsecond)
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := key(fmt.Sprintf("svc%d", w%2))
			for i := range each {
				c := r.Cell(k)
				c.Request(time.Duration(i%100)*time.Millisecond, i%10 == 0)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-swapped
	reports = append(reports, r.Swap(t0.Add(time.Hour)))
	var requests, failures, hist uint64
	for _, rep := range reports {
		for _, s := range rep.Series {
			requests += s.Requests
			failures += s.Failures
			for _, n := range s.BucketCount {
				hist += n
			}
		}
	}
	if requests != workers*each || hist != requests {
		t.Errorf("counted %d requests (histogram %d), want %d", requests, hist, workers*each)
	}
	if failures != workers*each/10 {
		t.Errorf("counted %d failures, want %d", failures, workers*each/10)
	}
}

// TestRecorderHistogramCounts: each latency lands in its telemetry bucket
// and the report's histogram is sparse, in bucket order.
func TestRecorderHistogramCounts(t *testing.T) {
	r := NewRecorder(t0)
	c := r.Cell(key("api"))
	lat := []time.Duration{time.Millisecond, time.Millisecond, 10 * time.Millisecond, time.Second}
	for _, d := range lat {
		c.Request(d, d == time.Second)
	}
	rep := r.Swap(t0.Add(10 * time.Second))
	if rep.IntervalMillis != 10000 || rep.EndUnixNanos != t0.Add(10*time.Second).UnixNano() {
		t.Errorf("interval %d ms ending %d, want 10000 ms ending at t0+10s", rep.IntervalMillis, rep.EndUnixNanos)
	}
	if len(rep.Series) != 1 {
		t.Fatalf("%d series, want 1", len(rep.Series))
	}
	s := rep.Series[0]
	want := map[uint32]uint64{uint32(Bucket(time.Millisecond)): 2, uint32(Bucket(10 * time.Millisecond)): 1, uint32(Bucket(time.Second)): 1}
	if len(s.BucketIndex) != len(want) {
		t.Fatalf("buckets %v, want %v", s.BucketIndex, want)
	}
	for i, b := range s.BucketIndex {
		if i > 0 && b <= s.BucketIndex[i-1] {
			t.Errorf("buckets %v out of order", s.BucketIndex)
		}
		if s.BucketCount[i] != want[b] {
			t.Errorf("bucket %d counted %d, want %d", b, s.BucketCount[i], want[b])
		}
	}
	if s.Requests != 4 || s.Failures != 1 || KeyOf(s.Key) != key("api") {
		t.Errorf("series %v, want 4 requests, 1 failure, key api", s)
	}
	if next := r.Swap(t0.Add(20 * time.Second)); len(next.Series) != 0 {
		t.Errorf("second swap reported %v, want nothing (deltas)", next.Series)
	}
}

// TestRecorderCapsKeys: beyond MaxKeys a new key gets no cell (its
// requests count as overflow); keys idle for two intervals free their
// place and bump Gen.
func TestRecorderCapsKeys(t *testing.T) {
	r := NewRecorder(t0)
	for i := range MaxKeys {
		if r.Cell(key(fmt.Sprint("s", i))) == nil {
			t.Fatalf("no cell for key %d of %d", i, MaxKeys)
		}
	}
	if c := r.Cell(key("one-too-many")); c != nil {
		t.Fatal("a cell beyond MaxKeys")
	}
	r.Overflow()
	gen := r.Gen()
	rep := r.Swap(t0.Add(time.Second))
	if rep.Overflow != 1 {
		t.Errorf("overflow %d, want 1", rep.Overflow)
	}
	r.Swap(t0.Add(2 * time.Second)) // second idle interval: dropped
	if r.Gen() == gen {
		t.Error("Gen unchanged after idle keys were dropped")
	}
	if c := r.Cell(key("one-too-many")); c == nil {
		t.Error("no cell after idle keys freed their places")
	}
}

// TestRecorderKeepsTheMostRecentDenials: an interval lists its last
// MaxDenials denials, oldest first, counts the others, and cuts long paths.
func TestRecorderKeepsTheMostRecentDenials(t *testing.T) {
	r := NewRecorder(t0)
	long := make([]byte, 2*MaxDenialPath)
	for i := range long {
		long[i] = 'a'
	}
	for i := range MaxDenials + 5 {
		r.Deny(Denial{At: t0.Add(time.Duration(i)), Method: "GET", Path: "/" + string(long), DecisionID: fmt.Sprint(i)})
	}
	rep := r.Swap(t0.Add(time.Second))
	if len(rep.Denials) != MaxDenials || rep.DenialsDropped != 5 {
		t.Fatalf("%d denials (%d dropped), want %d (5 dropped)", len(rep.Denials), rep.DenialsDropped, MaxDenials)
	}
	if rep.Denials[0].DecisionId != "5" || rep.Denials[MaxDenials-1].DecisionId != fmt.Sprint(MaxDenials+4) {
		t.Errorf("denials %s..%s, want 5..%d", rep.Denials[0].DecisionId, rep.Denials[MaxDenials-1].DecisionId, MaxDenials+4)
	}
	if len(rep.Denials[0].Path) != MaxDenialPath {
		t.Errorf("path of %d bytes, want cut at %d", len(rep.Denials[0].Path), MaxDenialPath)
	}
	if next := r.Swap(t0.Add(2 * time.Second)); len(next.Denials) != 0 || next.DenialsDropped != 0 {
		t.Errorf("next interval has %d denials, want none", len(next.Denials))
	}
}

// TestRecorderRecordsWithoutAllocating: counting a request on a cell, and
// looking an existing cell up, allocate nothing.
func TestRecorderRecordsWithoutAllocating(t *testing.T) {
	r := NewRecorder(t0)
	k := key("api")
	r.Cell(k)
	if n := testing.AllocsPerRun(1000, func() { r.Cell(k).Request(3*time.Millisecond, false) }); n != 0 {
		t.Errorf("%v allocations per request, want 0", n)
	}
}

// TestBucketIsTheFirstBoundAtOrAbove: the table search puts a value just
// above a bound in the next bucket, and values past the last bound in the
// last bucket.
func TestBucketIsTheFirstBoundAtOrAbove(t *testing.T) {
	for i := range NumBuckets - 1 {
		if got := Bucket(UpperBound(i) + 1); got != i+1 {
			t.Errorf("Bucket(UpperBound(%d)+1) = %d, want %d", i, got, i+1)
		}
	}
	if got := Bucket(UpperBound(NumBuckets-1) * 10); got != NumBuckets-1 {
		t.Errorf("Bucket past the last bound = %d, want %d", got, NumBuckets-1)
	}
	if got := Bucket(-time.Second); got != 0 {
		t.Errorf("Bucket(-1s) = %d, want 0", got)
	}
}
