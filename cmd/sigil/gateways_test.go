package main

import (
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

// `sigil get` says which VirtualServices apply to no sidecar.
func TestGatewaysAppliesToColumn(t *testing.T) {
	for _, tt := range []struct {
		kind, spec, want string
	}{
		{"VirtualService", `{"hosts":["api"]}`, "sidecars"},
		{"VirtualService", `{"hosts":["api"],"gateways":["mesh","gw"]}`, "sidecars"},
		{"VirtualService", `{"hosts":["*"],"gateways":["bookinfo-gateway","istio-system/gw"]}`, "no sidecar (gateways: bookinfo-gateway,istio-system/gw)"},
		{"VirtualService", `{"http":[{"route":[{"destination":{"host":"api"}}]}]}`, "delegate (where a root route delegates to it)"},
		{"DestinationRule", `{"host":"api"}`, "sidecars"},
		{"HTTPRoute", `{"spec":{"parentRefs":[{"group":"","kind":"Service","name":"api","port":80},{"group":"","kind":"Service","name":"db","namespace":"data"}]}}`, "callers of api.shop:80,db.data"},
		{"GRPCRoute", `{"spec":{"parentRefs":[{"name":"gw"}]}}`, "no sidecar (no Service parentRef)"},
	} {
		if got := appliesTo(adminv1.Resource{Kind: tt.kind, Namespace: "shop", Spec: []byte(tt.spec)}); got != tt.want {
			t.Errorf("%s %s: %q, want %q", tt.kind, tt.spec, got, tt.want)
		}
	}
}
