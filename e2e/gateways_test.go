package e2e

import (
	"strings"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// toV2 is a VirtualService sending all of api to v2, with gateways as
// given ("" for none).
func toV2(gateways string) string {
	return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
` + gateways + `  http:
  - route:
    - destination: {host: api, subset: v2}
`
}

// gateways: [mesh, x] applies to sidecars; [x] alone does not (requests
// follow the default route, to every endpoint), is stored, and `sigil
// get` says it applies to no sidecar; a match for gateways only never
// matches at a sidecar.
func TestTrafficGatewaysMeshOnly(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"})
	tm.apply(t, subsetsDR+"---\n"+toV2("  gateways: [mesh, bookinfo-gateway]\n"))
	if by, failed := count(tm.load(100, 4, "/", nil)); failed > 0 || by["api-v2"] != 100 {
		t.Fatalf("gateways [mesh, bookinfo-gateway]: %v, %d failed; want all 100 on api-v2", by, failed)
	}

	tm.apply(t, toV2("  gateways: [bookinfo-gateway, istio-system/public-gw]\n"))
	by, failed := count(tm.load(200, 4, "/", nil))
	if failed > 0 || by["api-v1"] == 0 || by["api-v2"] == 0 {
		t.Fatalf("gateways [bookinfo-gateway] only: %v, %d failed; want the default route (both versions)", by, failed)
	}
	got := harness.MustRun(t, "sigil", "get", "virtualservices", "--admin-socket", adminv1.AdminSocket(tm.ids.m.DataDir))
	if !strings.Contains(got, "no sidecar (gateways: bookinfo-gateway,istio-system/public-gw)") {
		t.Fatalf("sigil get virtualservices does not say it applies to no sidecar:\n%s", got)
	}

	// The first route's match is for a gateway: it is skipped, and is no
	// catch-all either; the second (v1) applies.
	tm.apply(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  gateways: [mesh, bookinfo-gateway]
  http:
  - match:
    - gateways: [bookinfo-gateway]
    route:
    - destination: {host: api, subset: v2}
  - route:
    - destination: {host: api, subset: v1}
`)
	if by, failed := count(tm.load(100, 4, "/", nil)); failed > 0 || by["api-v1"] != 100 {
		t.Fatalf("match for a gateway: %v, %d failed; want all 100 on api-v1", by, failed)
	}
}

// Two ports of one service routed apart by match.port: the port is the
// one the app addressed (here the authority's); at a port no route names
// the default route applies, as in Istio.
func TestTrafficPortRoutes(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"})
	tm.apply(t, subsetsDR+"---\n"+`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  http:
  - match:
    - port: 8080
    route:
    - destination: {host: api, subset: v1}
  - match:
    - port: 9090
    route:
    - destination: {host: api, subset: v2}
`)
	for _, tt := range []struct{ port, want string }{{":8080", "api-v1"}, {":9090", "api-v2"}} {
		if by, failed := count(tm.load(100, 4, tt.port+"/", nil)); failed > 0 || by[tt.want] != 100 {
			t.Fatalf("api%s: %v, %d failed; want all 100 on %s", tt.port, by, failed, tt.want)
		}
	}
	// No route of the VirtualService is for port 80: Istio drops it from
	// that port's routes, and the default route (every endpoint) applies.
	if by, failed := count(tm.load(200, 4, "/", nil)); failed > 0 || by["api-v1"] == 0 || by["api-v2"] == 0 {
		t.Fatalf("api (port 80): %v, %d failed; want the default route (both versions)", by, failed)
	}
}
