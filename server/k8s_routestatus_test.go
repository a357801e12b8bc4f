package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/k8s/crdsource"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// routeObject is an HTTPRoute attached to Service reviews (its second
// parentRef; the first is a Gateway's) sending to backend.
func routeObject(name string, backend map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"name": name, "namespace": "default", "generation": int64(3), "uid": "uid-" + name},
		"spec": map[string]any{
			"parentRefs": []any{
				map[string]any{"name": "gw"},
				map[string]any{"group": "", "kind": "Service", "name": "reviews", "port": int64(9080)},
			},
			"rules": []any{map[string]any{"backendRefs": []any{backend}}},
		},
	}}
}

// An accepted route whose backendRef Sigil cannot send to says so in its
// status as package gatewayapi judges it (and sigil apply warns):
// Accepted=True, ResolvedRefs=False with Gateway API's reason, on the
// entry of the parentRef's own index, with observedGeneration; never
// ResolvedRefs=True because the configuration took the route.
func TestRouteStatusResolvedRefsFromGatewayAPI(t *testing.T) {
	s, _ := storeServer(t)
	gvr := schema.GroupVersionResource{Group: crdsource.GatewayGroup, Version: "v1", Resource: "httproutes"}
	objs := []runtime.Object{
		routeObject("good", map[string]any{"name": "reviews", "port": int64(9080)}),
		routeObject("configmap", map[string]any{"kind": "ConfigMap", "name": "reviews", "port": int64(9080)}),
		routeObject("elsewhere", map[string]any{"name": "reviews", "namespace": "other", "port": int64(9080)}),
	}
	src, dyn := routeSource(t, s, nil, objs)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	if err := src.Start(ctx, &wg); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		resolved string // ResolvedRefs status/reason
	}{
		{"good", "True/ResolvedRefs"},
		{"configmap", "False/InvalidKind"},
		{"elsewhere", "False/RefNotPermitted"},
	}
	for _, tt := range tests {
		parents := routeParents(t, dyn.Resource(gvr).Namespace("default"), tt.name)
		if len(parents) != 1 {
			t.Fatalf("%s: parents %v, want the Service's only", tt.name, parents)
		}
		p := parents[0].(map[string]any)
		if ref, _ := p["parentRef"].(map[string]any); ref["name"] != "reviews" {
			t.Errorf("%s: parentRef %v, want Service reviews", tt.name, ref)
		}
		got := map[string]string{}
		conds, _ := p["conditions"].([]any)
		for _, c := range conds {
			m := c.(map[string]any)
			got[m["type"].(string)] = m["status"].(string) + "/" + m["reason"].(string)
			if m["observedGeneration"] != int64(3) {
				t.Errorf("%s: %s: observedGeneration %v, want 3", tt.name, m["type"], m["observedGeneration"])
			}
			if m["lastTransitionTime"] != "2026-11-30T08:00:00Z" {
				t.Errorf("%s: %s: lastTransitionTime %v", tt.name, m["type"], m["lastTransitionTime"])
			}
		}
		if got["Accepted"] != "True/Accepted" || got["ResolvedRefs"] != tt.resolved || len(got) != 2 {
			t.Errorf("%s: conditions %v, want Accepted=True/Accepted, ResolvedRefs=%s", tt.name, got, tt.resolved)
		}
	}
}

// routeParents waits for route name to have status.parents (the fake's
// watch tells of the status write) and returns them.
func routeParents(t *testing.T, routes dynamic.ResourceInterface, name string) []any {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	w, err := routes.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	u, err := routes.Get(ctx, name, metav1.GetOptions{})
	for err == nil {
		if parents, _, _ := unstructured.NestedSlice(u.Object, "status", "parents"); len(parents) > 0 {
			return parents
		}
		select {
		case ev := <-w.ResultChan():
			if got, ok := ev.Object.(*unstructured.Unstructured); ok && got.GetName() == name {
				u = got
			}
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	t.Fatalf("route %s: no status.parents: %v", name, err)
	return nil
}

// TestRouteStatusTranslatesOncePerNamespace: the leader writes the
// status of every route of a namespace one route at a time; the
// namespace's routes are translated once per configuration version for
// all of them (linear in the routes), not once per route (quadratic),
// and each route still gets its own parents' conditions.
func TestRouteStatusTranslatesOncePerNamespace(t *testing.T) {
	ctx := context.Background()
	s, _ := storeServer(t)
	store := kubeConfigStore{s}
	const perNamespace = 30
	namespaces := []string{"shop", "books"}
	var objs []crdsource.Object
	for _, ns := range namespaces {
		for i := range perNamespace {
			obj := crdsource.Object{Group: crdsource.GatewayGroup, Kind: "HTTPRoute", Namespace: ns, Name: fmt.Sprintf("r%d", i)}
			backend := `{"name":"reviews","port":9080}`
			if i%2 == 1 {
				backend = `{"kind":"ConfigMap","name":"reviews","port":9080}` // ResolvedRefs=False: each route's own status
			}
			doc := fmt.Sprintf(`{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":%q,"namespace":%q},
"spec":{"parentRefs":[{"group":"","kind":"Service","name":"reviews","port":9080}],
"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/r%d"}}],"backendRefs":[%s]}]}}`, obj.Name, ns, i, backend)
			if err := store.Apply(ctx, obj, []byte(doc)); err != nil {
				t.Fatalf("%s: %v", obj, err)
			}
			objs = append(objs, obj)
		}
	}
	for round := range 2 {
		for i, obj := range objs {
			parents, err := store.Parents(ctx, obj)
			if err != nil {
				t.Fatal(err)
			}
			want := metav1.ConditionTrue
			if i%2 == 1 {
				want = metav1.ConditionFalse
			}
			if got := meta.FindStatusCondition(parents[0], "ResolvedRefs"); len(parents) != 1 || got == nil || got.Status != want {
				t.Fatalf("round %d: %s: parents %v, want ResolvedRefs=%s on parentRef 0", round, obj, parents, want)
			}
		}
		x, unlock, err := s.lockConfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := x.routes.translations.Load()
		unlock()
		if n != int64(len(namespaces)) {
			t.Errorf("round %d: %d translations for %d routes in %d namespaces, want one per namespace", round, n, len(objs), len(namespaces))
		}
		// A change moves the version: the next round translates afresh.
		if err := store.Delete(ctx, objs[len(objs)-1]); err != nil {
			t.Fatal(err)
		}
		objs = objs[:len(objs)-1]
	}
}
