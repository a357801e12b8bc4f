package rollout

import (
	"encoding/json"
	"fmt"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/naming"
)

// target is the route a rollout shifts: a VirtualService of the service
// and the index of its HTTP route whose destinations are the service's
// subsets From and To (one of them may be missing at first).
type target struct {
	name, namespace string
	// spec is the VirtualService's spec as stored, decoded generically
	// so that every field the rollout does not touch goes back as it was.
	spec  map[string]any
	route int
	from  string
}

// findTarget picks, among the VirtualServices of the namespace, the one
// whose hosts name the service and whose HTTP route sends the service's
// traffic to subsets: the first route with a destination of subset from
// or to and none of another subset of the service. from "" is the
// route's one other subset. It names what it did not find.
func findTarget(vss []adminv1.Resource, cfg Config) (*target, error) {
	res, err := naming.NewResolver(cfg.Namespace, naming.DefaultClusterDomain)
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	want := naming.Service{Name: cfg.Service, Namespace: cfg.Namespace}
	isService := func(host any) bool {
		h, ok := host.(string)
		if !ok {
			return false
		}
		// A resource's host, read as Istio reads it (reviews.prod is a
		// host outside the mesh there).
		rh, err := res.ResourceHost(h)
		return err == nil && rh.Kind == naming.MeshService && rh.Service == want
	}
	for _, vs := range vss {
		if vs.Namespace != cfg.Namespace {
			continue
		}
		var spec map[string]any
		if err := json.Unmarshal(vs.Spec, &spec); err != nil {
			return nil, fmt.Errorf("rollout: virtualservice %s/%s: %w", vs.Namespace, vs.Name, err)
		}
		hosts, _ := spec["hosts"].([]any)
		named := false
		for _, h := range hosts {
			named = named || isService(h)
		}
		if !named {
			continue
		}
		routes, _ := spec["http"].([]any)
		for i, rt := range routes {
			subsets, ok := routeSubsets(rt, isService)
			if !ok {
				continue
			}
			from, ok := pickFrom(subsets, cfg.From, cfg.To)
			if ok {
				return &target{name: vs.Name, namespace: vs.Namespace, spec: spec, route: i, from: from}, nil
			}
		}
	}
	from := cfg.From
	if from == "" {
		from = "another subset"
	}
	return nil, fmt.Errorf("rollout: no VirtualService in namespace %s routes %s to %s and %s: apply one with an http route to subset %s (a DestinationRule defines the subsets)", cfg.Namespace, cfg.Service, from, cfg.To, from)
}

// routeSubsets lists the subsets an HTTP route's destinations name, when
// every destination is the service (ok false otherwise: a route that also
// sends elsewhere is not the rollout's to change).
func routeSubsets(rt any, isService func(any) bool) ([]string, bool) {
	m, _ := rt.(map[string]any)
	dests, _ := m["route"].([]any)
	if len(dests) == 0 {
		return nil, false
	}
	var out []string
	for _, d := range dests {
		dm, _ := d.(map[string]any)
		dest, _ := dm["destination"].(map[string]any)
		if !isService(dest["host"]) {
			return nil, false
		}
		sub, _ := dest["subset"].(string)
		out = append(out, sub)
	}
	return out, true
}

// pickFrom returns the subset the rollout shifts away from: from when
// given, else the route's one subset besides to. The route must name no
// subset but these two (and no destination without a subset).
func pickFrom(subsets []string, from, to string) (string, bool) {
	if from == "" {
		for _, s := range subsets {
			if s != to {
				if from != "" && s != from {
					return "", false
				}
				from = s
			}
		}
	}
	if from == "" || from == to {
		return "", false
	}
	for _, s := range subsets {
		if s != from && s != to {
			return "", false
		}
	}
	return from, true
}

// withWeights returns the target's VirtualService as a file for `apply`
// with the route sending weight per cent to subset to and the rest to
// from: both destinations present (the missing one copied from the other
// with its subset changed), every other field as stored.
func (t *target) withWeights(to string, weight int) (adminv1.File, error) {
	spec, err := deepCopy(t.spec)
	if err != nil {
		return adminv1.File{}, err
	}
	routes := spec["http"].([]any)
	rt := routes[t.route].(map[string]any)
	dests := rt["route"].([]any)
	var fromD, toD map[string]any
	for _, d := range dests {
		dm := d.(map[string]any)
		switch dm["destination"].(map[string]any)["subset"] {
		case t.from:
			fromD = dm
		case to:
			toD = dm
		}
	}
	clone := func(src map[string]any, subset string) (map[string]any, error) {
		c, err := deepCopy(src)
		if err != nil {
			return nil, err
		}
		c["destination"].(map[string]any)["subset"] = subset
		return c, nil
	}
	if fromD == nil {
		if fromD, err = clone(toD, t.from); err != nil {
			return adminv1.File{}, err
		}
	}
	if toD == nil {
		if toD, err = clone(fromD, to); err != nil {
			return adminv1.File{}, err
		}
	}
	fromD["weight"], toD["weight"] = 100-weight, weight
	rt["route"] = []any{fromD, toD}
	doc := map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "VirtualService",
		"metadata":   map[string]any{"name": t.name, "namespace": t.namespace},
		"spec":       spec,
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return adminv1.File{}, fmt.Errorf("rollout: encoding the virtualservice: %w", err)
	}
	return adminv1.File{Name: "sigil-rollout/" + t.namespace + "/" + t.name, Content: string(b)}, nil
}

func deepCopy(m map[string]any) (map[string]any, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	return out, nil
}
