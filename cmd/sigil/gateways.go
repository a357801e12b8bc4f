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
// gateway (docs/istio.md, Gateways). A VirtualService with no hosts is a
// delegate: its routes apply where a root route delegates to it.
func appliesTo(r adminv1.Resource) string {
	if r.Kind != traffic.KindVirtualService {
		return "sidecars"
	}
	var spec struct {
		Hosts    []string `json:"hosts"`
		Gateways []string `json:"gateways"`
	}
	if err := json.Unmarshal(r.Spec, &spec); err != nil {
		return "?"
	}
	if len(spec.Hosts) == 0 {
		return "delegate (where a root route delegates to it)"
	}
	if traffic.AppliesToMesh(spec.Gateways) {
		return "sidecars"
	}
	return "no sidecar (gateways: " + strings.Join(termsafe.Fields(spec.Gateways), ",") + ")"
}
