package naming

import "testing"

// Every request a caller's sidecar routes resolves its Host through
// Resolver.Host: on the request path it may not allocate (it split the name
// with strings.Split, one allocation per request, before session 25).
func TestRequestPathAllocationsResolverHost(t *testing.T) {
	r, err := NewResolver("prod", "corp.local")
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"api", "api.bench", "api.bench.svc", "api.bench.svc.corp.local", "API.Bench"} {
		if _, err := r.Host(host); err != nil {
			t.Fatalf("Host(%q): %v", host, err)
		}
		if host == "API.Bench" {
			continue // lower-casing a mixed-case name copies it, once
		}
		if n := testing.AllocsPerRun(100, func() { _, _ = r.Host(host) }); n != 0 {
			t.Errorf("Host(%q): %.1f allocations, want 0", host, n)
		}
	}
}
