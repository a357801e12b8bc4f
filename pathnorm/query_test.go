package pathnorm

import (
	"errors"
	"net/url"
	"runtime"
	"strings"
	"testing"
)

// manyParams is a query of n parameters, the last of them tenant=mine.
func manyParams(n int) string {
	return strings.Repeat("a=1&", n-1) + "tenant=mine"
}

// A query with more parameters than an app parses is refused: past its
// limit an app drops parameters (Express's qs keeps the first 1,000; Go's
// net/url, since 1.24, drops them all past 10,000), so the policy would
// decide on parameters the app never sees, and the app would run without
// one the policy required.
func TestQueryParameterCountBoundedAsApps(t *testing.T) {
	// What the limit closes: Go's app sees no tenant where a policy
	// reading every parameter would see tenant=mine.
	if v, err := url.ParseQuery(manyParams(10001)); err == nil || v.Get("tenant") != "" {
		t.Fatalf("net/url parsed %d parameters without error (%v); the premise of the limit changed", 10001, err)
	}
	for _, tc := range []struct {
		query string
		ok    bool
	}{
		{manyParams(MaxQueryParams), true},
		{manyParams(MaxQueryParams + 1), false},
		{manyParams(10001), false},
		{strings.Repeat("&", MaxQueryParams-1), true},
		{strings.Repeat("&", MaxQueryParams), false}, // empty pairs count, as in net/url
	} {
		_, err := Options{}.Target("GET", "/x?"+tc.query)
		if tc.ok && err != nil {
			t.Errorf("%d '&': refused: %v", strings.Count(tc.query, "&"), err)
		}
		if !tc.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("%d '&': %v, want ErrInvalid", strings.Count(tc.query, "&"), err)
		}
	}
}

// ParseQuery allocates in proportion to the parameters it finds, not to
// the separators: a query of one name repeated must not size a map for
// every pair.
func TestParseQueryMemoryBoundedByInput(t *testing.T) {
	q := strings.Repeat("a&", MaxQueryParams-1) + "a"
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	m := ParseQuery(q)
	runtime.ReadMemStats(&after)
	if len(m["a"]) != MaxQueryParams {
		t.Fatalf("parsed %d values, want %d", len(m["a"]), MaxQueryParams)
	}
	// The values (a slice header each, grown by doubling) and one map slot.
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(3*16*MaxQueryParams); got > limit {
		t.Fatalf("ParseQuery of %d bytes allocated %d bytes, want at most %d", len(q), got, limit)
	}
}
