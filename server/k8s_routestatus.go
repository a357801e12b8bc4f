package server

import (
	"context"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/sigil-mesh/sigil/gatewayapi"
	"github.com/sigil-mesh/sigil/k8s/crdsource"
	"github.com/sigil-mesh/sigil/traffic"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

var _ crdsource.ParentReporter = kubeConfigStore{}

// Parents gives an accepted route's status.parents conditions as
// package gatewayapi judges them over the whole configuration in force
// (Translate: Accepted, and ResolvedRefs with Gateway API's reason —
// BackendNotFound, RefNotPermitted, InvalidKind — when a backendRef does
// not resolve), so the status kubectl shows is the one sigil apply warns
// of. Each entry is keyed by its parentRef's index in spec.parentRefs:
// gatewayapi echoes each Service parentRef as written, in order. A
// route the configuration does not hold as obj's gets no entries.
//
// The routes of a namespace are translated once per configuration
// version (routeIndex), not once per route: a leader writing the status
// of a namespace's n routes did n translations of n routes each.
func (k kubeConfigStore) Parents(ctx context.Context, obj crdsource.Object) (map[int][]metav1.Condition, error) {
	x, unlock, err := k.s.lockConfig(ctx)
	if err != nil {
		return nil, err
	}
	if x.routes == nil {
		x.routes = newRouteIndex(x.items)
	}
	idx := x.routes
	unlock()
	mine, statuses := idx.parents(kubeOrigin(obj), obj.Kind, obj.Namespace, obj.Name)
	if mine == nil {
		return nil, nil
	}
	var written []gwv1.ParentReference
	switch {
	case mine.HTTP != nil:
		written = mine.HTTP.ParentRefs
	case mine.GRPC != nil:
		written = mine.GRPC.ParentRefs
	}
	out := map[int][]metav1.Condition{}
	next := 0 // statuses come in spec.parentRefs order
	for _, st := range statuses {
		for i := next; i < len(written); i++ {
			if reflect.DeepEqual(written[i], st.Status.ParentRef) {
				out[i], next = st.Status.Conditions, i+1
				break
			}
		}
	}
	return out, nil
}

// routeRef names a route: kind, namespace, name.
type routeRef struct{ kind, namespace, name string }

// storedRoute is a route with the origin it was stored from.
type storedRoute struct {
	route  *gatewayapi.Route
	origin string
}

// routeIndex is the configuration's routes at one version, grouped by
// namespace, with the statuses of each namespace's routes translated the
// first time one of them is asked for. It is never changed but by that
// (under mu); a write to the configuration drops it (configIndex.routes).
type routeIndex struct {
	byNamespace map[string][]traffic.Resource // accepted routes
	routes      map[routeRef]storedRoute

	mu         sync.Mutex
	translated map[string]map[routeRef][]gatewayapi.ParentStatus // namespace → route → statuses, in parentRefs order
	// translations counts Translate calls: one per namespace asked for.
	translations atomic.Int64
}

func newRouteIndex(items map[string]indexed) *routeIndex {
	ri := &routeIndex{byNamespace: map[string][]traffic.Resource{}, routes: map[routeRef]storedRoute{}, translated: map[string]map[routeRef][]gatewayapi.ParentStatus{}}
	for _, it := range items {
		r, ok := it.parsed.Route.(*gatewayapi.Route)
		if it.bad != nil || !ok {
			continue
		}
		ri.byNamespace[it.parsed.Namespace] = append(ri.byNamespace[it.parsed.Namespace], it.parsed)
		ri.routes[routeRef{r.Kind, r.Namespace, r.Name}] = storedRoute{r, it.stored.Origin}
	}
	return ri
}

// parents returns the route kind namespace/name stored from origin, with
// its parents' statuses; nil when the configuration holds no such route
// from that origin. Translate groups routes by their own namespace: the
// others cannot change a route's status.
func (ri *routeIndex) parents(origin, kind, namespace, name string) (*gatewayapi.Route, []gatewayapi.ParentStatus) {
	ref := routeRef{kind, namespace, name}
	mine, ok := ri.routes[ref]
	if !ok || mine.origin != origin {
		return nil, nil
	}
	ri.mu.Lock()
	defer ri.mu.Unlock()
	byRoute, ok := ri.translated[namespace]
	if !ok {
		_, statuses := gatewayapi.Translate(ri.byNamespace[namespace])
		ri.translations.Add(1)
		byRoute = map[routeRef][]gatewayapi.ParentStatus{}
		for _, st := range statuses {
			r := routeRef{st.Kind, st.Namespace, st.Name}
			byRoute[r] = append(byRoute[r], st)
		}
		ri.translated[namespace] = byRoute
	}
	return mine.route, byRoute[ref]
}
