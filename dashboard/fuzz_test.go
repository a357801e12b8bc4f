package dashboard

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// FuzzDashboardQuery sends arbitrary query strings to every API path: the
// answer is a 200 or a 400, never a panic or a 500 (the fake store never
// fails).
func FuzzDashboardQuery(f *testing.F) {
	for _, seed := range []string{"", "window=5m", "window=-1s", "window=9223372036854775807ns", "namespace=default&name=api", "namespace=%00", "limit=500", "limit=-1", "name=" + "a/../b", "window=1e9h"} {
		f.Add(seed)
	}
	stats, inv := meshFixture()
	h, err := New(Config{Stats: stats, Denials: stats, Inventory: inv, Splits: inv})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, query string) {
		stats.mu.Lock()
		stats.queries = nil // keep the fake's memory flat
		stats.mu.Unlock()
		for _, path := range []string{"overview", "service", "canaries", "graph", "identities", "denials"} {
			req := httptest.NewRequest(http.MethodGet, "/api/"+path, nil)
			req.URL.RawQuery = query
			if _, err := url.ParseQuery(query); err != nil {
				req.URL.RawQuery = url.QueryEscape(query)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
				t.Fatalf("/api/%s?%s: %d %s", path, req.URL.RawQuery, rec.Code, rec.Body)
			}
		}
	})
}
