package adminv1

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A stats query's parameters are parsed strictly: unknown or repeated
// parameters, windows that are not positive durations and overlong names
// are refused with a 400 that names them; what Values writes parses back.
func TestStatQueryParameters(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		want    StatQuery
		wantErr string
	}{
		{"", StatQuery{}, ""},
		{"kind=route&namespace=prod&name=reviews&window=5m", StatQuery{Kind: "route", Namespace: "prod", Name: "reviews", Window: 5 * time.Minute}, ""},
		{"window=1h30s", StatQuery{Window: time.Hour + 30*time.Second}, ""},
		{"window=soon", StatQuery{}, `window "soon"`},
		{"window=-1m", StatQuery{}, `window "-1m"`},
		{"window=0s", StatQuery{}, `window "0s"`},
		{"kind=svc&kind=route", StatQuery{}, `"kind" given 2 times`},
		{"pod=x", StatQuery{}, `unknown query parameter "pod"`},
		{"name=" + strings.Repeat("a", MaxQueryName+1), StatQuery{}, "longer than"},
	} {
		v, err := url.ParseQuery(tc.raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseStatQuery(v)
		if tc.wantErr != "" {
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want a 400 naming %s", tc.raw, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.raw, got, err, tc.want)
		}
		if back, err := ParseStatQuery(got.Values()); err != nil || back != got {
			t.Errorf("%q: Values round trip gave %+v, %v", tc.raw, back, err)
		}
	}
	for _, tc := range []struct {
		raw       string
		ns        string
		limit     int
		wantError bool
	}{{"", "", 0, false}, {"namespace=prod&limit=20", "prod", 20, false}, {"limit=-1", "", 0, true}, {"limit=x", "", 0, true}, {"limit=10001", "", 0, true}, {"since=1", "", 0, true}} {
		v, _ := url.ParseQuery(tc.raw)
		ns, limit, err := ParseDenialsQuery(v)
		if (err != nil) != tc.wantError || ns != tc.ns || limit != tc.limit {
			t.Errorf("denials %q: %q %d %v", tc.raw, ns, limit, err)
		}
	}
}

// FuzzParseStatQuery: any query string either is refused or parses to a
// query whose Values parse back to the same query.
func FuzzParseStatQuery(f *testing.F) {
	for _, s := range []string{"", "kind=route&window=1m", "window=1h30m&name=spiffe%3A%2F%2Fx%2Fns%2Fa", "window=1e9", "kind=a&kind=b", "namespace=%ff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseStatQuery(v)
		if err != nil {
			return
		}
		back, err := ParseStatQuery(q.Values())
		if err != nil || back != q {
			t.Fatalf("%q: %+v does not round trip: %+v, %v", raw, q, back, err)
		}
		_, _, _ = ParseDenialsQuery(v)
	})
}
