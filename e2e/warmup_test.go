package e2e

import "testing"

// TestLoadBalancerWarmupNewEndpoint: through the real sidecars, with a
// DestinationRule warmup of 300s (minimumPercent 10, round robin), an
// instance that joins api after web's sidecar synced gets about a tenth of
// a warm instance's share (0.1/2.1 ≈ 5%, not a third) while it warms.
func TestLoadBalancerWarmupNewEndpoint(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"})
	tm.apply(t, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\nspec:\n  host: api\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUND_ROBIN\n      warmup: {duration: 300s}\n")
	tm.addBackend(t, &backend{name: "api-v3", version: "v3"})
	tm.waitBackends(t, "api-v3")
	const n = 420
	by, failed := count(tm.load(n, 4, "/", nil))
	if failed > 0 {
		t.Fatalf("answered by %v, %d failed", by, failed)
	}
	if v3 := by["api-v3"]; v3 == 0 || v3 > n*12/100 {
		t.Fatalf("answered by %v: the new instance got %d of %d, want about %d (5%%), far below a third", by, v3, n, n*5/100)
	}
	// (api-v2 may have joined after web's sidecar synced, and be warming
	// too; the two together still take nearly all.)
	if old := by["api-v1"] + by["api-v2"]; old < n*85/100 {
		t.Fatalf("answered by %v: the warm instances got %d of %d, want about 95%%", by, old, n)
	}
}
