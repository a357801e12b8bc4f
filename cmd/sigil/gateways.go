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
	if r.Kind == traffic.KindPolicy {
		return policyAppliesTo(r)
	}
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

// policyAppliesTo is the APPLIES TO column of a Policy: its mode and the
// sidecars it selects (docs/policy-resource.md, Scope).
func policyAppliesTo(r adminv1.Resource) string {
	var spec struct {
		Mode     string                    `json:"mode"`
		Selector *traffic.WorkloadSelector `json:"selector"`
	}
	if err := json.Unmarshal(r.Spec, &spec); err != nil {
		return "?"
	}
	where := "sidecars of namespace " + termsafe.Field(r.Namespace)
	if r.Namespace == traffic.RootNamespace {
		where = "mesh-wide sidecars"
	}
	if spec.Selector != nil {
		where += " with labels " + labels(spec.Selector.MatchLabels)
	}
	return termsafe.Field(spec.Mode) + ": " + where
}
