package evictions

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// FuzzParse: whatever a ConfigMap entry holds (anyone who may edit the
// ConfigMap writes it), Parse does not panic, and an eviction it returns
// names an agent and a time no later than now+MaxFuture.
func FuzzParse(f *testing.F) {
	f.Add("0f", `{"agent":"spiffe://example.org/sigil/agent/k8s_psat/c/n","evicted_at":"2026-11-30T10:00:00.5Z","replica":"a","until":"2026-11-30T11:00:10.5Z"}`)
	f.Add(Key("spiffe://example.org/sigil/agent/join_token/n"), `{"agent":"spiffe://example.org/sigil/agent/join_token/n","evicted_at":"2026-11-30T10:00:00Z"}`)
	f.Add("x", `{"agent":"","evicted_at":"0001-01-01T00:00:00Z"}`)
	f.Add("x", `{"agent":1}`)
	f.Add("x", `[]`)
	f.Add(Key("spiffe://example.org/sigil/agent/k8s_psat/c/n"), `{"agent":"spiffe://example.org/sigil/agent/k8s_psat/c/n","evicted_at":"9999-01-01T00:00:00Z","banned":true}`)
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, key, value string) {
		got, _ := Parse(&corev1.ConfigMap{Data: map[string]string{key: value}}, now)
		for id, e := range got {
			if id == "" || e.Agent != id || e.At.IsZero() || e.At.After(now.Add(MaxFuture)) {
				t.Fatalf("Parse(%q: %q) = %+v", key, value, got)
			}
		}
	})
}
