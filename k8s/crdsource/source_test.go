package crdsource

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kwatch "k8s.io/apimachinery/pkg/watch"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
)

var (
	vsGVR     = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	drGVR     = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
	policyGVR = schema.GroupVersionResource{Group: "security.sigil.dev", Version: "v1", Resource: "policies"}
	routeGVR  = schema.GroupVersionResource{Group: GatewayGroup, Version: "v1", Resource: "httproutes"}
)

// fakeStore is a Store that keeps documents by object and refuses a
// document whose spec holds "refuse".
type fakeStore struct {
	mu      sync.Mutex
	docs    map[Object]string
	applied map[Object]int // Apply calls
	changed chan struct{}
}

func newFakeStore(held ...Object) *fakeStore {
	f := &fakeStore{docs: map[Object]string{}, applied: map[Object]int{}, changed: make(chan struct{}, 100)}
	for _, o := range held {
		f.docs[o] = "{}"
	}
	return f
}

func (f *fakeStore) Apply(_ context.Context, obj Object, doc []byte) error {
	f.mu.Lock()
	f.applied[obj]++
	f.mu.Unlock()
	if strings.Contains(string(doc), "refuse") || strings.Contains(string(doc), `"invalid"`) {
		f.signal()
		return &Refusal{Reason: "Invalid", Message: obj.Kind + " " + obj.Namespace + "/" + obj.Name + `: field "refuse" is not supported by Sigil, at spec.refuse`}
	}
	f.mu.Lock()
	f.docs[obj] = string(doc)
	f.mu.Unlock()
	f.signal()
	return nil
}

// signal tells waitFor the store changed; a full buffer has told it
// already.
func (f *fakeStore) signal() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *fakeStore) Delete(_ context.Context, obj Object) error {
	f.mu.Lock()
	_, ok := f.docs[obj]
	delete(f.docs, obj)
	f.mu.Unlock()
	if ok {
		f.signal()
	}
	return nil
}

func (f *fakeStore) Stored(context.Context) ([]Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Object
	for o := range f.docs {
		out = append(out, o)
	}
	return out, nil
}

func (f *fakeStore) doc(o Object) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.docs[o]
	return d, ok
}

// waitFor waits for the store to change until ok holds.
func (f *fakeStore) waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !ok() {
		select {
		case <-f.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func obj(gvr schema.GroupVersionResource, kind, ns, name string, generation int64, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(),
		"kind":       kind,
		"metadata":   map[string]any{"name": name, "namespace": ns, "generation": generation, "uid": ns + "-" + name},
		"spec":       spec,
	}}
	return u
}

func resources(gv string, names ...string) *metav1.APIResourceList {
	l := &metav1.APIResourceList{GroupVersion: gv}
	for _, n := range names {
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: n, Namespaced: true, Verbs: metav1.Verbs{"get", "list", "watch"}})
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: n + "/status", Namespaced: true, Verbs: metav1.Verbs{"get", "update", "patch"}})
	}
	return l
}

// fakeDisc is the fake discovery, its resources changeable while a
// Source reads them.
type fakeDisc struct {
	*fakediscovery.FakeDiscovery
	mu     sync.Mutex
	served []*metav1.APIResourceList
}

func (d *fakeDisc) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	d.mu.Lock()
	d.FakeDiscovery.Resources = d.served
	defer d.mu.Unlock()
	return d.FakeDiscovery.ServerResourcesForGroupVersion(gv)
}

func (d *fakeDisc) serve(l *metav1.APIResourceList) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.served = append(d.served, l)
}

type fixture struct {
	dyn      *dynamicfake.FakeDynamicClient
	disc     *fakeDisc
	store    Store
	src      *Source
	barriers int
}

func newFixture(t *testing.T, store Store, leader func() bool, kinds []Kind, served []*metav1.APIResourceList, objs ...runtime.Object) *fixture {
	return newFixtureRescan(t, store, leader, kinds, served, 0, objs...)
}

func newFixtureRescan(t *testing.T, store Store, leader func() bool, kinds []Kind, served []*metav1.APIResourceList, rescan time.Duration, objs ...runtime.Object) *fixture {
	t.Helper()
	listKinds := map[schema.GroupVersionResource]string{
		vsGVR: "VirtualServiceList", drGVR: "DestinationRuleList", policyGVR: "PolicyList", routeGVR: "HTTPRouteList",
		crdGVR: "CustomResourceDefinitionList",
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, objs...)
	disc := &fakeDisc{FakeDiscovery: &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}, served: served}
	src, err := New(Options{Dynamic: dyn, Discovery: disc, Store: store, Kinds: kinds, IsLeader: leader, Rescan: rescan,
		Log: slog.New(slog.NewTextHandler(testLog, nil)), Now: func() time.Time { return time.Date(2026, 11, 30, 7, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	if err := src.Start(ctx, &wg); err != nil {
		t.Fatal(err)
	}
	return &fixture{dyn: dyn, disc: disc, store: store, src: src}
}

func (f *fixture) status(t *testing.T, gvr schema.GroupVersionResource, ns, name string) map[string]any {
	t.Helper()
	u, err := f.dyn.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, _, _ := unstructured.NestedMap(u.Object, "status")
	return st
}

// barrier creates a VirtualService the store refuses (so no other
// object is retried) and waits until the worker applied it: everything
// queued before it is done, the worker taking the queue in order.
func (f *fixture) barrier(t *testing.T) {
	t.Helper()
	f.barriers++
	name := "barrier-" + strconv.Itoa(f.barriers)
	if _, err := f.dyn.Resource(vsGVR).Namespace("default").Create(context.Background(),
		obj(vsGVR, "VirtualService", "default", name, 1, map[string]any{"refuse": true}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	fs := f.fakeStore()
	fs.waitFor(t, name+" to be applied", func() bool { return fs.appliedTo(name) > 0 })
}

func (f *fakeStore) appliedTo(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied[Object{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "default", Name: name}]
}

func (f *fixture) fakeStore() *fakeStore {
	switch s := f.store.(type) {
	case *fakeStore:
		return s
	case routeStore:
		return s.fakeStore
	}
	return nil
}

// statusWritesOf counts the status writes of the object name.
func statusWritesOf(f *fixture, name string) int {
	n := 0
	for _, a := range f.dyn.Actions() {
		if u, ok := a.(clienttesting.UpdateAction); ok && a.GetSubresource() == "status" {
			if obj, ok := u.GetObject().(*unstructured.Unstructured); ok && obj.GetName() == name {
				n++
			}
		}
	}
	return n
}

func statusWrites(f *fixture) int {
	n := 0
	for _, a := range f.dyn.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" {
			n++
		}
	}
	return n
}

func accepted(st map[string]any) (status, reason, message string, gen int64) {
	conds, _ := st["conditions"].([]any)
	for _, c := range conds {
		m := c.(map[string]any)
		if m["type"] == ConditionAccepted {
			g, _ := m["observedGeneration"].(int64)
			return m["status"].(string), m["reason"].(string), m["message"].(string), g
		}
	}
	return "", "", "", 0
}

var testLog io.Writer = io.Discard

var istioServed = resources("networking.istio.io/v1", "virtualservices", "destinationrules")

// Objects present at start are mirrored before Start returns, each on
// its own: a refused one gets Accepted=False with the Store's reason
// and message, an accepted one Accepted=True, both with
// observedGeneration; what the Store held of objects gone is removed.
func TestConfigFromCRDsMirrorsEachObject(t *testing.T) {
	gone := Object{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "default", Name: "gone"}
	store := newFakeStore(gone)
	good := obj(vsGVR, "VirtualService", "default", "good", 3, map[string]any{"hosts": []any{"a"}})
	bad := obj(vsGVR, "VirtualService", "default", "bad", 2, map[string]any{"refuse": true})
	f := newFixture(t, store, nil, nil, []*metav1.APIResourceList{istioServed}, good, bad)

	goodObj := Object{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "default", Name: "good"}
	doc, ok := store.doc(goodObj)
	if !ok {
		t.Fatal("good not stored at start")
	}
	want := `{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"good","namespace":"default"},"spec":{"hosts":["a"]}}`
	if doc != want {
		t.Errorf("document %s, want %s", doc, want)
	}
	if _, ok := store.doc(gone); ok {
		t.Error("an object stored earlier and gone from Kubernetes was not removed at start")
	}
	if _, ok := store.doc(Object{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "default", Name: "bad"}); ok {
		t.Error("refused object stored")
	}

	tests := []struct {
		name               string
		status, reason, in string
		gen                int64
	}{
		{"good", "True", "Accepted", "accepted", 3},
		{"bad", "False", "Invalid", `field "refuse" is not supported by Sigil, at spec.refuse`, 2},
	}
	for _, tt := range tests {
		st := f.status(t, vsGVR, "default", tt.name)
		status, reason, message, gen := accepted(st)
		if status != tt.status || reason != tt.reason || !strings.Contains(message, tt.in) || gen != tt.gen {
			t.Errorf("%s: Accepted=%s reason %s message %q generation %d; want %s %s %q %d", tt.name, status, reason, message, gen, tt.status, tt.reason, tt.in, tt.gen)
		}
		if g, _ := st["observedGeneration"].(int64); g != tt.gen {
			t.Errorf("%s: status.observedGeneration %d, want %d", tt.name, g, tt.gen)
		}
	}

	counts := map[string]int{}
	for _, c := range f.src.Counts() {
		counts[c.Kind+"/"+strconv.FormatBool(c.Accepted)] = c.Objects
	}
	if want := map[string]int{"VirtualService/true": 1, "VirtualService/false": 1, "DestinationRule/true": 0, "DestinationRule/false": 0}; !reflect.DeepEqual(counts, want) {
		t.Errorf("Counts %v, want %v", counts, want)
	}

	// Deleting the object removes it.
	if err := f.dyn.Resource(vsGVR).Namespace("default").Delete(context.Background(), "good", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	store.waitFor(t, "the deleted object to go", func() bool { _, ok := store.doc(goodObj); return !ok })
}

// A status already saying the answer is not written again: resyncs and
// the update event of Sigil's own status write cost no API call.
func TestConfigFromCRDsStatusIdempotent(t *testing.T) {
	store := newFakeStore()
	f := newFixture(t, store, nil, nil, []*metav1.APIResourceList{istioServed},
		obj(vsGVR, "VirtualService", "default", "a", 1, map[string]any{"hosts": []any{"a"}}))
	if n := statusWrites(f); n != 1 {
		t.Fatalf("%d status writes at start, want 1", n)
	}
	f.src.queueAll()
	f.barrier(t)
	if n := statusWritesOf(f, "a"); n != 1 {
		t.Errorf("%d status writes after a resync of an unchanged object, want still 1", n)
	}
	// Another controller's condition is kept beside Sigil's.
	u, _ := f.dyn.Resource(vsGVR).Namespace("default").Get(context.Background(), "a", metav1.GetOptions{})
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	conds = append(conds, map[string]any{"type": "Reconciled", "status": "True"})
	_ = unstructured.SetNestedSlice(u.Object, conds, "status", "conditions")
	_ = unstructured.SetNestedField(u.Object, int64(2), "metadata", "generation")
	w, err := f.dyn.Resource(vsGVR).Namespace("default").Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := f.dyn.Resource(vsGVR).Namespace("default").UpdateStatus(context.Background(), u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		var ev kwatch.Event
		select {
		case ev = <-w.ResultChan():
		case <-timeout:
			t.Fatal("the new generation's condition was not written")
		}
		st, _, _ := unstructured.NestedMap(ev.Object.(*unstructured.Unstructured).Object, "status")
		if _, _, _, gen := accepted(st); gen == 2 {
			if c, _ := st["conditions"].([]any); len(c) != 2 {
				t.Errorf("conditions %v: want Sigil's and the other controller's", c)
			}
			return
		}
	}
}

// Only the leader writes status; the objects are mirrored on every
// replica.
func TestConfigFromCRDsOnlyLeaderWritesStatus(t *testing.T) {
	store := newFakeStore()
	f := newFixture(t, store, func() bool { return false }, nil, []*metav1.APIResourceList{istioServed},
		obj(vsGVR, "VirtualService", "default", "a", 1, map[string]any{"hosts": []any{"a"}}))
	if _, ok := store.doc(Object{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "default", Name: "a"}); !ok {
		t.Error("a follower did not mirror the object")
	}
	if n := statusWrites(f); n != 0 {
		t.Errorf("a follower wrote status %d times", n)
	}
}

// A kind whose CRD is installed after the start is watched once
// discovery shows it (at a CRD's event, or the periodic rescan this
// test relies on: the fake's watch may miss an event sent before it
// is established).
func TestConfigFromCRDsInstalledLater(t *testing.T) {
	store := newFakeStore()
	f := newFixtureRescan(t, store, nil, nil, []*metav1.APIResourceList{istioServed}, 20*time.Millisecond)
	f.disc.serve(resources("security.sigil.dev/v1", "policies"))
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "policies.security.sigil.dev"},
	}}
	p := obj(policyGVR, "Policy", "default", "authz", 1, map[string]any{"modules": map[string]any{"a.rego": "package sigil.authz"}})
	if _, err := f.dyn.Resource(policyGVR).Namespace("default").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.dyn.Resource(crdGVR).Create(context.Background(), crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := Object{Group: "security.sigil.dev", Kind: "Policy", Namespace: "default", Name: "authz"}
	store.waitFor(t, "the policy of a CRD installed later", func() bool { _, ok := store.doc(want); return ok })
}

// A route is Sigil's only when a parentRef is a Service (GAMMA); its
// status has one parent entry per such parentRef under Sigil's
// controllerName, beside other controllers' entries.
func TestConfigFromCRDsRouteParents(t *testing.T) {
	store := newFakeStore()
	mesh := obj(routeGVR, "HTTPRoute", "default", "mesh", 1, map[string]any{"parentRefs": []any{
		map[string]any{"group": "", "kind": "Service", "name": "reviews", "port": int64(9080)},
		map[string]any{"name": "gw"},
	}})
	gw := obj(routeGVR, "HTTPRoute", "default", "ingress", 1, map[string]any{"parentRefs": []any{map[string]any{"name": "gw"}}})
	f := newFixture(t, store, nil, []Kind{HTTPRoute}, []*metav1.APIResourceList{resources(GatewayGroup+"/v1", "httproutes")}, mesh, gw)
	if _, ok := store.doc(Object{Group: GatewayGroup, Kind: "HTTPRoute", Namespace: "default", Name: "ingress"}); ok {
		t.Error("a route of a Gateway only was mirrored")
	}
	if st := f.status(t, routeGVR, "default", "ingress"); st != nil {
		t.Errorf("a route of a Gateway only got status %v", st)
	}
	st := f.status(t, routeGVR, "default", "mesh")
	parents, _ := st["parents"].([]any)
	if len(parents) != 1 {
		t.Fatalf("parents %v: want one, the Service", parents)
	}
	p := parents[0].(map[string]any)
	b, _ := json.Marshal(p)
	if p["controllerName"] != ControllerName || !strings.Contains(string(b), `"kind":"Service"`) {
		t.Errorf("parent %s", b)
	}
	if status, reason, _, _ := accepted(p); status != "True" || reason != ReasonAccepted {
		t.Errorf("parent %s: want Accepted=True", b)
	}
}

// routeStore is a Store that reports a route's parents: the first
// parentRef's backend does not resolve.
type routeStore struct{ *fakeStore }

func (routeStore) Parents(context.Context, Object) (map[int][]metav1.Condition, error) {
	return map[int][]metav1.Condition{0: {
		{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted, Message: "attached to Service default/reviews"},
		{Type: ConditionResolvedRefs, Status: metav1.ConditionFalse, Reason: "BackendNotFound", Message: "Service default/nope not found"},
	}}, nil
}

// A Store that judges routes per parent (ParentReporter) has its
// conditions written as given; a route it refuses gets Gateway API's
// UnsupportedValue for an invalid one.
func TestConfigFromCRDsRouteParentsReported(t *testing.T) {
	store := routeStore{newFakeStore()}
	ok := obj(routeGVR, "HTTPRoute", "default", "ok", 4, map[string]any{"parentRefs": []any{map[string]any{"kind": "Service", "name": "reviews"}}})
	bad := obj(routeGVR, "HTTPRoute", "default", "bad", 1, map[string]any{"parentRefs": []any{map[string]any{"kind": "Service", "name": "reviews"}}, "refuse": true})
	f := newFixture(t, store, nil, []Kind{HTTPRoute}, []*metav1.APIResourceList{resources(GatewayGroup+"/v1", "httproutes")}, ok, bad)
	tests := []struct {
		name string
		want map[string]string // condition type → status/reason
		gen  int64
	}{
		{"ok", map[string]string{"Accepted": "True/Accepted", "ResolvedRefs": "False/BackendNotFound"}, 4},
		{"bad", map[string]string{"Accepted": "False/UnsupportedValue", "ResolvedRefs": "True/ResolvedRefs"}, 1},
	}
	for _, tt := range tests {
		parents, _ := f.status(t, routeGVR, "default", tt.name)["parents"].([]any)
		if len(parents) != 1 {
			t.Fatalf("%s: parents %v", tt.name, parents)
		}
		conds, _ := parents[0].(map[string]any)["conditions"].([]any)
		got := map[string]string{}
		for _, c := range conds {
			m := c.(map[string]any)
			got[m["type"].(string)] = m["status"].(string) + "/" + m["reason"].(string)
			if m["observedGeneration"] != tt.gen {
				t.Errorf("%s: %v: observedGeneration %v, want %d", tt.name, m["type"], m["observedGeneration"], tt.gen)
			}
		}
		if len(got) != len(tt.want) {
			t.Errorf("%s: conditions %v, want %v", tt.name, got, tt.want)
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%s: %s=%s, want %s", tt.name, k, got[k], v)
			}
		}
	}
}

func TestObjectString(t *testing.T) {
	for _, o := range []Object{
		{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "default", Name: "reviews"},
		{Group: "security.sigil.dev", Kind: "Policy", Namespace: "sigil-system", Name: "authz"},
	} {
		got, ok := ParseObject(o.String())
		if !ok || got != o {
			t.Errorf("ParseObject(%q) = %v, %v", o.String(), got, ok)
		}
	}
	for _, s := range []string{"", "VirtualService/default/a", "VirtualService.x/default", ".x/a/b", "A.x//b"} {
		if _, ok := ParseObject(s); ok {
			t.Errorf("ParseObject(%q) accepted", s)
		}
	}
}

// A server that may not list a kind it should mirror does not start
// (fail closed, naming the kind and the permission) instead of waiting
// for ever on an informer that cannot sync.
func TestConfigFromCRDsFailsClosedWithoutPermission(t *testing.T) {
	for _, res := range []string{"virtualservices", "customresourcedefinitions"} {
		listKinds := map[schema.GroupVersionResource]string{vsGVR: "VirtualServiceList", drGVR: "DestinationRuleList", policyGVR: "PolicyList", crdGVR: "CustomResourceDefinitionList"}
		dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds)
		dyn.PrependReactor("list", res, func(a clienttesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(a.GetResource().GroupResource(), "", errors.New("RBAC: access denied"))
		})
		disc := &fakeDisc{FakeDiscovery: &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}, served: []*metav1.APIResourceList{istioServed}}
		src, err := New(Options{Dynamic: dyn, Discovery: disc, Store: newFakeStore(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var wg sync.WaitGroup
		err = src.Start(ctx, &wg)
		cancel()
		wg.Wait()
		if err == nil || !strings.Contains(err.Error(), "listing "+res) || !strings.Contains(err.Error(), "get, list and watch") || !strings.Contains(err.Error(), "forbidden") {
			t.Errorf("%s forbidden: Start = %v", res, err)
		}
	}
}

// A kind whose CRD exists but that discovery does not serve yet (it lags
// a CRD's creation) keeps what the Store holds of it until it is served;
// only then are the objects Kubernetes does not have removed.
func TestConfigFromCRDsDiscoveryLag(t *testing.T) {
	held := Object{Group: "security.sigil.dev", Kind: "Policy", Namespace: "default", Name: "gone"}
	store := newFakeStore(held)
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "policies.security.sigil.dev"},
	}}
	f := newFixtureRescan(t, store, nil, nil, []*metav1.APIResourceList{istioServed}, 20*time.Millisecond, crd)
	if _, ok := store.doc(held); !ok {
		t.Fatal("a stored object of a kind whose CRD exists but is not served yet was removed")
	}
	f.disc.serve(resources("security.sigil.dev/v1", "policies"))
	store.waitFor(t, "the object gone from Kubernetes to be removed once its kind is served", func() bool { _, ok := store.doc(held); return !ok })
}

// A refused object is applied again only once something changed (an
// object accepted or removed, or a rescan): a resync, or the update its
// own status write causes, costs no second check (a Policy's tests).
func TestConfigFromCRDsRefusedRetriedPerChange(t *testing.T) {
	store := newFakeStore()
	f := newFixture(t, store, nil, nil, []*metav1.APIResourceList{istioServed},
		obj(vsGVR, "VirtualService", "default", "bad", 1, map[string]any{"refuse": true}))
	bad := Object{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "default", Name: "bad"}
	applied := func() int {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.applied[bad]
	}
	f.src.queueAll()
	f.barrier(t)
	if n := applied(); n != 1 {
		t.Errorf("refused object applied %d times by a resync with nothing changed, want 1", n)
	}
	if _, err := f.dyn.Resource(vsGVR).Namespace("default").Create(context.Background(),
		obj(vsGVR, "VirtualService", "default", "good", 1, map[string]any{"hosts": []any{"a"}}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	store.waitFor(t, "the new object", func() bool {
		_, ok := store.doc(Object{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "default", Name: "good"})
		return ok
	})
	deadline := time.Now().Add(10 * time.Second)
	for applied() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("refused object applied %d times after another was accepted, want 2", applied())
		}
		time.Sleep(10 * time.Millisecond) // the worker's retry of refused objects has no other signal
	}
}
