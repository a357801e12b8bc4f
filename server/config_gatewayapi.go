package server

import (
	"errors"
	"fmt"
	"strings"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/gatewayapi"
	"github.com/sigil-mesh/sigil/traffic"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Gateway API routes (HTTPRoute, GRPCRoute) are stored and listed as
// themselves (sigil get httproute); what agents and sidecars get are the
// VirtualServices package gatewayapi makes of them all, as Istio does:
// sidecars never read a route.

// derivedWires is the VirtualServices the stored routes make, as the
// agents' snapshot carries them, by key.
func derivedWires(items map[string]indexed) map[string]*agentv1.Resource {
	var routes []traffic.Resource
	for _, it := range items {
		if it.bad == nil && it.parsed.Route != nil {
			routes = append(routes, it.parsed)
		}
	}
	vss, _ := gatewayapi.Translate(routes)
	out := make(map[string]*agentv1.Resource, len(vss))
	for _, vs := range vss {
		spec, err := vs.Spec()
		if err != nil {
			continue // FromSpec made it from JSON; it marshals
		}
		out[vs.Key()] = &agentv1.Resource{Kind: vs.Kind, Namespace: vs.Namespace, Name: vs.Name, Spec: spec}
	}
	return out
}

// parseConfig reads the resources of one file (sigil apply) or object
// (Kubernetes): the one parser of both, Gateway API routes included.
func parseConfig(data []byte, source string) ([]traffic.Resource, error) {
	rs, err := gatewayapi.Parse(data, source)
	return rs, errors.Join(err, reservedNames(rs))
}

// reservedNames refuses a VirtualService named as the ones made from
// routes are (gatewayapi.NamePrefix): one would replace the other.
func reservedNames(parsed []traffic.Resource) error {
	var errs []error
	for _, r := range parsed {
		if r.VS != nil && strings.HasPrefix(r.Name, gatewayapi.NamePrefix) {
			errs = append(errs, fmt.Errorf("%s: metadata.name: names starting with %q are Sigil's, for the VirtualServices it makes of HTTPRoutes and GRPCRoutes", r.Ref(), gatewayapi.NamePrefix))
		}
	}
	return errors.Join(errs...)
}

// routeWarnings are the status conditions that are not True of the
// routes among touched, as apply warnings: a backendRef Sigil cannot
// send to answers 500 for its share of requests, and the user should
// hear it at apply as a kubectl user reads it in status.
func routeWarnings(all, touched []traffic.Resource) []string {
	refs, namespaces := map[string]bool{}, map[string]bool{}
	for _, r := range touched {
		if r.Route != nil {
			refs[r.Ref()] = true
			namespaces[r.Namespace] = true
		}
	}
	if len(refs) == 0 {
		return nil
	}
	// Translate groups routes by their own namespace: only the touched
	// routes' namespaces can change their status, and translating every
	// namespace's routes made each apply cost the whole configuration's.
	var near []traffic.Resource
	for _, r := range all {
		if r.Route != nil && namespaces[r.Namespace] {
			near = append(near, r)
		}
	}
	_, sts := gatewayapi.Translate(near)
	var out []string
	for _, st := range sts {
		if !refs[st.Kind+" "+st.Namespace+"/"+st.Name] {
			continue
		}
		for _, c := range st.Status.Conditions {
			if c.Status != metav1.ConditionTrue {
				out = append(out, fmt.Sprintf("%s %s/%s: parent Service %s: %s=%s (%s): %s", st.Kind, st.Namespace, st.Name, st.Status.ParentRef.Name, c.Type, c.Status, c.Reason, c.Message))
			}
		}
	}
	return out
}
