package gatewayapi

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// ControllerName is what Sigil writes in status.parents[].controllerName.
const ControllerName gwv1.GatewayController = "sigil.dev/mesh"

// NamePrefix starts the name of every VirtualService Translate makes:
// "gamma.<service>.<service namespace>" in the routes' namespace.
const NamePrefix = "gamma."

// parent is a Service a route is attached to, on one port (0: all).
type parent struct {
	svc  naming.Service
	port uint32
	ref  gwv1.ParentReference
}

// servicesOf lists the route's Service parents: parentRefs of group ""
// and kind Service. Other parents (Gateways) are another controller's.
// Each keeps its parentRef as written, which its status entry echoes.
func servicesOf(r *Route) []parent {
	written := r.spec.ParentRefs
	switch {
	case r.HTTP != nil:
		written = r.HTTP.ParentRefs
	case r.GRPC != nil:
		written = r.GRPC.ParentRefs
	}
	var out []parent
	for i, p := range r.spec.ParentRefs {
		if p.Group == nil || *p.Group != "" || p.Kind == nil || *p.Kind != "Service" {
			continue
		}
		pp := parent{svc: naming.Service{Name: string(p.Name), Namespace: string(*p.Namespace)}, ref: *written[i].DeepCopy()}
		if p.Port != nil {
			pp.port = uint32(*p.Port)
		}
		out = append(out, pp)
	}
	return out
}

// checkParents refuses a Service parentRef Sigil cannot attach to.
func checkParents(r *Route) error {
	for i, p := range r.spec.ParentRefs {
		if p.Group == nil || *p.Group != "" || p.Kind == nil || *p.Kind != "Service" {
			continue
		}
		pp := fmt.Sprintf("spec.parentRefs[%d]", i)
		if !naming.ValidServiceName(string(p.Name)) || !naming.ValidNamespace(string(*p.Namespace)) {
			return unsupported(pp, "%s is not a Service name", naming.Quote(string(p.Name)+"."+string(*p.Namespace)))
		}
		if p.SectionName != nil {
			return unsupported(pp+".sectionName", "not supported for a Service: name the port by number (port)")
		}
		if p.Port != nil && (*p.Port < 1 || *p.Port > 65535) {
			return unsupported(pp+".port", "%d is not a port", *p.Port)
		}
	}
	return nil
}

// entriesFor is rules' entries for one parent: each match on that
// parent's port.
func entriesFor(rs ruleSet, p parent) []entry {
	out := make([]entry, len(rs.entries))
	for i, e := range rs.entries {
		m := e.http.Match[0]
		m.Port = p.port
		e.http.Match = []traffic.HTTPMatchRequest{m}
		out[i] = e
	}
	return out
}

// sortEntries puts entries in Gateway API's precedence order: by rank,
// then the oldest route, then namespace/name, then the order written.
func sortEntries(es []entry) {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.rank != b.rank {
			return a.rank.less(b.rank)
		}
		if !a.route.Created.Equal(b.route.Created) {
			return a.route.Created.Before(b.route.Created)
		}
		if ka, kb := a.route.Namespace+"/"+a.route.Name, b.route.Namespace+"/"+b.route.Name; ka != kb {
			return ka < kb
		}
		if a.route.Kind != b.route.Kind {
			return a.route.Kind > b.route.Kind // HTTPRoute before GRPCRoute
		}
		if a.rule != b.rule {
			return a.rule < b.rule
		}
		return a.match < b.match
	})
}

// buildVS makes the VirtualService of the routes of namespace attached
// to svc, and validates it as any VirtualService (traffic.FromSpec).
func buildVS(namespace string, svc naming.Service, es []entry) (traffic.Resource, error) {
	sortEntries(es)
	spec := traffic.VirtualServiceSpec{Hosts: []string{fqdn(svc)}}
	if namespace != svc.Namespace {
		spec.ExportTo = []string{"."} // a consumer route: its namespace's callers only
	}
	for _, e := range es {
		spec.HTTP = append(spec.HTTP, e.http)
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return traffic.Resource{}, fmt.Errorf("gatewayapi: %w", err)
	}
	return traffic.FromSpec(traffic.KindVirtualService, namespace, NamePrefix+svc.Name+"."+svc.Namespace, js)
}

// ParentStatus is the status of one route for one of its Service
// parents, as Gateway API's status.parents[] entry. Conditions carry no
// lastTransitionTime: the writer sets it (meta.SetStatusCondition keeps
// the old one when a condition did not change).
type ParentStatus struct {
	Kind, Namespace, Name string // the route
	Generation            int64
	Status                gwv1.RouteParentStatus
}

// Translate turns the routes among resources (those with a Route) into
// VirtualServices, one per Service and namespace of routes, and gives
// every route's Service parents their status. A route that is refused
// as a whole (FromSpec or Decoder failed) never gets here: Refused gives
// its status. Resources without a Route are left alone.
func Translate(resources []traffic.Resource) ([]traffic.Resource, []ParentStatus) {
	type group struct {
		namespace string
		svc       naming.Service
	}
	entries := map[group][]entry{}
	members := map[group][]*Route{}
	var statuses []ParentStatus
	var order []group
	for _, res := range resources {
		r, ok := res.Route.(*Route)
		if !ok {
			continue
		}
		// Decoder compiled and checked its rules (prepare): a route that
		// got here is accepted.
		rs := r.rules
		for _, p := range servicesOf(r) {
			st := newStatus(r, p.ref)
			st.Status.Conditions = []metav1.Condition{accepted(r, true, gwv1.RouteReasonAccepted, "attached to Service "+p.svc.Namespace+"/"+p.svc.Name), resolved(r, rs.unresolv)}
			statuses = append(statuses, st)
			g := group{r.Namespace, p.svc}
			if _, seen := entries[g]; !seen {
				order = append(order, g)
			}
			entries[g] = append(entries[g], entriesFor(rs, p)...)
			members[g] = append(members[g], r)
		}
	}
	var out []traffic.Resource
	for _, g := range order {
		vs, err := buildVS(g.namespace, g.svc, entries[g])
		if err != nil {
			// Each route passed alone (Decoder); together they cannot
			// fail but for size. Say so on every route of the group.
			for i := range statuses {
				if st := &statuses[i]; isMember(members[g], st) && string(st.Status.ParentRef.Name) == g.svc.Name {
					st.Status.Conditions[0] = accepted(nil, false, gwv1.RouteReasonUnsupportedValue, err.Error())
				}
			}
			continue
		}
		out = append(out, vs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, statuses
}

// WithVirtualServices is rs with the VirtualServices its routes make
// (Translate) added: the configuration as sidecars get it, for checks
// and reviews that read VirtualServices.
func WithVirtualServices(rs []traffic.Resource) []traffic.Resource {
	vss, _ := Translate(rs)
	return append(rs[:len(rs):len(rs)], vss...)
}

func isMember(rs []*Route, st *ParentStatus) bool {
	for _, r := range rs {
		if r.Kind == st.Kind && r.Namespace == st.Namespace && r.Name == st.Name {
			return true
		}
	}
	return false
}

func newStatus(r *Route, ref gwv1.ParentReference) ParentStatus {
	return ParentStatus{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, Generation: r.Generation,
		Status: gwv1.RouteParentStatus{ParentRef: ref, ControllerName: ControllerName}}
}

func accepted(r *Route, ok bool, reason gwv1.RouteConditionReason, msg string) metav1.Condition {
	return condition(r, gwv1.RouteConditionAccepted, ok, reason, msg)
}

func resolved(r *Route, problems []refProblem) metav1.Condition {
	if len(problems) == 0 {
		return condition(r, gwv1.RouteConditionResolvedRefs, true, gwv1.RouteReasonResolvedRefs, "every backendRef resolved")
	}
	msg := problems[0].message
	if len(problems) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(problems)-1)
	}
	return condition(r, gwv1.RouteConditionResolvedRefs, false, problems[0].reason, msg)
}

func condition(r *Route, typ gwv1.RouteConditionType, ok bool, reason gwv1.RouteConditionReason, msg string) metav1.Condition {
	c := metav1.Condition{Type: string(typ), Status: metav1.ConditionFalse, Reason: string(reason), Message: msg}
	if ok {
		c.Status = metav1.ConditionTrue
	}
	if r != nil {
		c.ObservedGeneration = r.Generation
	}
	return c
}

// Refused is the status of a route that Decoder or FromSpec refused with
// err: Accepted=False, reason UnsupportedValue, err as the message, on
// each of its Service parents (read leniently from js, the object as
// JSON). A document that names no Service parent gets none.
func Refused(kind string, js []byte, err error) []ParentStatus {
	var obj struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     struct {
			ParentRefs []gwv1.ParentReference `json:"parentRefs"`
		} `json:"spec"`
	}
	if json.Unmarshal(js, &obj) != nil {
		return nil
	}
	r := &Route{Kind: kind, Namespace: obj.Metadata.Namespace, Name: obj.Metadata.Name, Generation: obj.Metadata.Generation}
	if r.Namespace == "" {
		r.Namespace = "default"
	}
	r.HTTP = &gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: obj.Spec.ParentRefs}}
	r.spec = *r.HTTP.DeepCopy()
	defaults(&r.spec, r.Namespace)
	var out []ParentStatus
	for _, p := range servicesOf(r) {
		st := newStatus(r, p.ref)
		st.Status.Conditions = []metav1.Condition{accepted(r, false, gwv1.RouteReasonUnsupportedValue, err.Error())}
		out = append(out, st)
	}
	return out
}
