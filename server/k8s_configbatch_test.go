package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/internal/race"
	"github.com/sigil-mesh/sigil/k8s/crdsource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
)

// startRoutes starts configuration from CRDs on a fresh server whose
// API server holds n HTTPRoutes of one Service (every tenth refused),
// and returns how long Start took to mirror them.
func startRoutes(t *testing.T, n int) time.Duration {
	t.Helper()
	s, _ := storeServer(t)
	var objs []runtime.Object
	for i := range n {
		rule := map[string]any{"matches": []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": fmt.Sprintf("/r%d", i)}}},
			"backendRefs": []any{map[string]any{"name": "reviews", "port": int64(9080)}}}
		if i%10 == 9 {
			rule["filters"] = []any{map[string]any{"type": "NoSuchFilter"}} // refused: its own status says so
		}
		objs = append(objs, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
			"metadata": map[string]any{"name": fmt.Sprintf("r%04d", i), "namespace": "default", "generation": int64(1), "uid": fmt.Sprintf("uid-%d", i)},
			"spec": map[string]any{
				"parentRefs": []any{map[string]any{"group": "", "kind": "Service", "name": "reviews", "port": int64(9080)}},
				"rules":      []any{rule},
			},
		}})
	}
	// A follower: no status writes, which the fake API server's watch
	// (100 events) could not take at once.
	src, _ := routeSource(t, s, func() bool { return false }, objs)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	begin := time.Now()
	if err := src.Start(ctx, &wg); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	for _, c := range src.Counts() {
		if want := n / 10; !c.Accepted && c.Objects != want {
			t.Errorf("%d routes: %d refused, want %d", n, c.Objects, want)
		}
		if want := n - n/10; c.Accepted && c.Objects != want {
			t.Errorf("%d routes: %d accepted, want %d", n, c.Objects, want)
		}
	}
	return took
}

// routeSource is a Source of the HTTPRoutes objs for s, not started,
// with the fake API server holding them; leader as crdsource.Options'.
func routeSource(t *testing.T, s *Server, leader func() bool, objs []runtime.Object) (*crdsource.Source, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	gvr := schema.GroupVersionResource{Group: crdsource.GatewayGroup, Version: "v1", Resource: "httproutes"}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		gvr: "HTTPRouteList", {Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}: "CustomResourceDefinitionList"}, objs...)
	disc := &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}
	disc.Resources = []*metav1.APIResourceList{{GroupVersion: crdsource.GatewayGroup + "/v1", APIResources: []metav1.APIResource{
		{Name: "httproutes", Namespaced: true, Verbs: metav1.Verbs{"get", "list", "watch"}},
		{Name: "httproutes/status", Namespaced: true, Verbs: metav1.Verbs{"get", "update", "patch"}},
	}}}
	src, err := crdsource.New(crdsource.Options{Dynamic: dyn, Discovery: disc, Store: kubeConfigStore{s}, Kinds: []crdsource.Kind{crdsource.HTTPRoute},
		IsLeader: leader, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	return src, dyn
}

// TestConfigFromCRDsStartLinearInRoutes: a server starting beside n
// HTTPRoutes of one Service mirrors them in time linear in n (batched
// writes), not quadratic (one write each, each translating the
// Service's routes so far): four times the routes take under five
// times as long (the old path: 7.4). Measured as a ratio of runs on the same
// machine; a tenth of the routes are refused, each on its own.
func TestConfigFromCRDsStartLinearInRoutes(t *testing.T) {
	if testing.Short() || race.Enabled {
		t.Skip("times three starts; not under -short or the race detector (run it without -race)")
	}
	small, mid, large := startRoutes(t, 100), startRoutes(t, 200), startRoutes(t, 400)
	t.Logf("start with 100 routes: %v; 200: %v; 400: %v", small, mid, large)
	if ratio := float64(large) / float64(small); ratio > 5 {
		t.Errorf("400 routes took %.1f times as long as 100 (%v, %v): want under 5 (linear: at most 4; quadratic: 16)", ratio, large, small)
	}
}
