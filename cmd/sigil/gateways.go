package main

import (
	"encoding/json"
	"strings"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/cmd/internal/termsafe"
	"github.com/sigil-mesh/sigil/traffic"
)

// appliesTo is the APPLIES TO column of `sigil get virtualservices` (and
// destinationrules): "sidecars", or for a VirtualService bound only to
// gateways (spec.gateways without "mesh") "no sidecar (gateways: ...)":
// it is stored, and has no effect, since Sigil has no ingress or egress
// gateway (docs/istio.md, Gateways).
func appliesTo(r adminv1.Resource) string {
	if r.Kind != traffic.KindVirtualService {
		return "sidecars"
	}
	var spec struct {
		Gateways []string `json:"gateways"`
	}
	if err := json.Unmarshal(r.Spec, &spec); err != nil {
		return "?"
	}
	if traffic.AppliesToMesh(spec.Gateways) {
		return "sidecars"
	}
	return "no sidecar (gateways: " + strings.Join(termsafe.Fields(spec.Gateways), ",") + ")"
}
