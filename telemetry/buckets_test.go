package telemetry

import (
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	if got := UpperBound(NumBuckets - 1); got < 2*time.Minute {
		t.Fatalf("last bucket bound %v, want above 2m", got)
	}
	for _, d := range []time.Duration{0, time.Microsecond, MinLatency, MinLatency + 1, time.Millisecond, 7 * time.Millisecond, time.Second, time.Hour} {
		i := Bucket(d)
		if i < 0 || i >= NumBuckets {
			t.Fatalf("Bucket(%v) = %d out of range", d, i)
		}
		if i < NumBuckets-1 && d > UpperBound(i) {
			t.Errorf("Bucket(%v) = %d whose bound %v is below it", d, i, UpperBound(i))
		}
		if i > 0 && d <= UpperBound(i-1) {
			t.Errorf("Bucket(%v) = %d, but bucket %d (bound %v) holds it", d, i, i-1, UpperBound(i-1))
		}
		if i > 0 && i < NumBuckets-1 && float64(UpperBound(i)) > float64(d)*Growth*1.0001 {
			t.Errorf("Bucket(%v): bound %v more than Growth above", d, UpperBound(i))
		}
	}
	for i := 0; i < NumBuckets-1; i++ {
		if Bucket(UpperBound(i)) != i {
			t.Errorf("Bucket(UpperBound(%d)) = %d", i, Bucket(UpperBound(i)))
		}
	}
}

func TestQuantileFromMergedCounts(t *testing.T) {
	counts := make([]uint64, NumBuckets)
	for ms := 1; ms <= 100; ms++ {
		counts[Bucket(time.Duration(ms)*time.Millisecond)]++
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.95, 95 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		got, ok := Quantile(counts, c.q)
		if !ok || got < c.want || float64(got) > float64(c.want)*Growth {
			t.Errorf("Quantile(%v) = %v, %v; want in [%v, %v·%v]", c.q, got, ok, c.want, c.want, Growth)
		}
	}
	if _, ok := Quantile(make([]uint64, NumBuckets), 0.5); ok {
		t.Error("Quantile of no counts reported a value")
	}
}
