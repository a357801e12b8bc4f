package main

import (
	"encoding/json"
	"strconv"
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
	switch r.Kind {
	case traffic.KindPolicy:
		return policyAppliesTo(r)
	case traffic.KindHTTPRoute, traffic.KindGRPCRoute:
		return routeAppliesTo(r)
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
	if r.MeshWide { // the server's root namespace: sigil-system, or its --k8s-namespace
		where = "mesh-wide sidecars"
	}
	if spec.Selector != nil {
		where += " with labels " + labels(spec.Selector.MatchLabels)
	}
	return termsafe.Field(spec.Mode) + ": " + where
}

// routeAppliesTo is the APPLIES TO of an HTTPRoute or GRPCRoute: the
// callers of the Services it is attached to (Service parentRefs, GAMMA),
// "name.namespace[:port]"; a route of Gateways only applies to no
// sidecar.
func routeAppliesTo(r adminv1.Resource) string {
	var st struct {
		Spec struct {
			ParentRefs []struct {
				Group     *string `json:"group"`
				Kind      *string `json:"kind"`
				Namespace *string `json:"namespace"`
				Name      string  `json:"name"`
				Port      *int32  `json:"port"`
			} `json:"parentRefs"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(r.Spec, &st); err != nil {
		return "?"
	}
	var svcs []string
	for _, p := range st.Spec.ParentRefs {
		if p.Group == nil || *p.Group != "" || p.Kind == nil || *p.Kind != "Service" {
			continue
		}
		ns := r.Namespace
		if p.Namespace != nil {
			ns = *p.Namespace
		}
		s := termsafe.Field(p.Name) + "." + termsafe.Field(ns)
		if p.Port != nil {
			s += ":" + strconv.Itoa(int(*p.Port))
		}
		svcs = append(svcs, s)
	}
	if len(svcs) == 0 {
		return "no sidecar (no Service parentRef)"
	}
	return "callers of " + strings.Join(svcs, ",")
}
