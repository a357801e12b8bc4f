package server

import (
	"context"
	"reflect"

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
func (k kubeConfigStore) Parents(ctx context.Context, obj crdsource.Object) (map[int][]metav1.Condition, error) {
	x, unlock, err := k.s.lockConfig(ctx)
	if err != nil {
		return nil, err
	}
	var routes []traffic.Resource
	var mine *gatewayapi.Route
	origin := kubeOrigin(obj)
	for _, it := range x.items {
		// Translate groups routes by their own namespace: the others
		// cannot change this route's status.
		if it.bad != nil || it.parsed.Route == nil || it.parsed.Namespace != obj.Namespace {
			continue
		}
		routes = append(routes, it.parsed)
		if r, ok := it.parsed.Route.(*gatewayapi.Route); ok && it.stored.Origin == origin &&
			r.Kind == obj.Kind && r.Namespace == obj.Namespace && r.Name == obj.Name {
			mine = r
		}
	}
	unlock()
	if mine == nil {
		return nil, nil
	}
	_, statuses := gatewayapi.Translate(routes)
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
		if st.Kind != mine.Kind || st.Namespace != mine.Namespace || st.Name != mine.Name {
			continue
		}
		for i := next; i < len(written); i++ {
			if reflect.DeepEqual(written[i], st.Status.ParentRef) {
				out[i], next = st.Status.Conditions, i+1
				break
			}
		}
	}
	return out, nil
}
