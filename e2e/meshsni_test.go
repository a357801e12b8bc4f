package e2e

import "testing"

// TestMeshMTLSSNI: a DestinationRule's ISTIO_MUTUAL tls.sni (rule and
// subset level, as four of the corpus's documents write it) is sent in the
// mesh mTLS ClientHello between the real sidecars; the receiving sidecar
// checks the peer's SPIFFE ID, not the name, so the traffic flows and is
// routed as without it.
func TestMeshMTLSSNI(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"})
	tm.apply(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api
spec:
  host: api
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, sni: api.default.svc.cluster.local}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      tls: {mode: ISTIO_MUTUAL, sni: v2.api.example}
---
`+splitVS(0, 100))
	if by, failed := count(tm.load(50, 4, "/", nil)); failed > 0 || by["api-v2"] != 50 {
		t.Fatalf("ISTIO_MUTUAL with sni, routed to v2: %v, %d failed; want all 50 on api-v2", by, failed)
	}
	tm.apply(t, splitVS(100, 0))
	if by, failed := count(tm.load(50, 4, "/", nil)); failed > 0 || by["api-v1"] != 50 {
		t.Fatalf("ISTIO_MUTUAL with sni, routed to v1: %v, %d failed; want all 50 on api-v1", by, failed)
	}
}
