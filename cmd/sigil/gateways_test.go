package main

import (
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

// `sigil get` says which VirtualServices apply to no sidecar.
func TestGatewaysAppliesToColumn(t *testing.T) {
	for _, tt := range []struct {
		kind, spec, want string
		meshWide         bool
	}{
		{"VirtualService", `{"hosts":["api"]}`, "sidecars", false},
		{"VirtualService", `{"hosts":["api"],"gateways":["mesh","gw"]}`, "sidecars", false},
		{"VirtualService", `{"hosts":["*"],"gateways":["bookinfo-gateway","istio-system/gw"]}`, "no sidecar (gateways: bookinfo-gateway,istio-system/gw)", false},
		{"VirtualService", `{"http":[{"route":[{"destination":{"host":"api"}}]}]}`, "delegate (where a root route delegates to it)", false},
		{"DestinationRule", `{"host":"api"}`, "sidecars", false},
		{"HTTPRoute", `{"spec":{"parentRefs":[{"group":"","kind":"Service","name":"api","port":80},{"group":"","kind":"Service","name":"db","namespace":"data"}]}}`, "callers of api.shop:80,db.data", false},
		{"GRPCRoute", `{"spec":{"parentRefs":[{"name":"gw"}]}}`, "no sidecar (no Service parentRef)", false},
		// A Policy is mesh-wide as the server says (its root namespace).
		{"Policy", `{"mode":"enforce"}`, "enforce: sidecars of namespace shop", false},
		{"Policy", `{"mode":"dryrun","selector":{"matchLabels":{"app":"db"}}}`, "dryrun: mesh-wide sidecars with labels app=db", true},
	} {
		if got := appliesTo(adminv1.Resource{Kind: tt.kind, Namespace: "shop", Spec: []byte(tt.spec), MeshWide: tt.meshWide}); got != tt.want {
			t.Errorf("%s %s: %q, want %q", tt.kind, tt.spec, got, tt.want)
		}
	}
}
