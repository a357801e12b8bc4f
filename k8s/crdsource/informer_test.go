package crdsource

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// A kind no longer served (its CRD deleted) is no longer watched: what
// its objects put in the Store is removed, and its refused objects no
// longer count.
func TestConfigFromCRDsKindGone(t *testing.T) {
	store := newFakeStore()
	f := newFixtureRescan(t, store, nil, nil, []*metav1.APIResourceList{istioServed}, 20*time.Millisecond,
		obj(vsGVR, "VirtualService", "default", "good", 1, map[string]any{"hosts": []any{"a"}}),
		obj(vsGVR, "VirtualService", "default", "bad", 1, map[string]any{"refuse": true}))
	good := Object{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "default", Name: "good"}
	if _, ok := store.doc(good); !ok {
		t.Fatal("good not stored")
	}
	f.disc.mu.Lock()
	f.disc.served = nil
	f.disc.mu.Unlock()
	store.waitFor(t, "the objects of a kind no longer served to go", func() bool { _, ok := store.doc(good); return !ok })
	counted := func() int {
		n := 0
		for _, c := range f.src.Counts() {
			n += c.Objects
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for counted() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Counts after the kind went: %+v", f.src.Counts())
		}
		time.Sleep(10 * time.Millisecond) // the worker forgets the answer just after the Store's delete; nothing signals it
	}
}

// TestInformerCachesSlim: the informers hold of each object what the
// Source reads (the document's fields, generation, status), never its
// managedFields or kubectl's last-applied copy, and of a CRD its name
// only: the caches hold every object of the cluster of those kinds.
func TestInformerCachesSlim(t *testing.T) {
	vs := obj(vsGVR, "VirtualService", "default", "a", 1, map[string]any{"hosts": []any{"a"}})
	vs.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate}})
	vs.SetAnnotations(map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 4096), "team": "shop"})
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "virtualservices.networking.istio.io"},
		"spec":     map[string]any{"group": "networking.istio.io", "versions": []any{map[string]any{"name": "v1", "schema": strings.Repeat("s", 4096)}}},
	}}
	store := newFakeStore()
	f := newFixture(t, store, nil, nil, []*metav1.APIResourceList{istioServed}, vs, crd)

	got, ok := f.src.cached(key{kind: 0, namespace: "default", name: "a"})
	if !ok {
		t.Fatal("object not cached")
	}
	if len(got.GetManagedFields()) != 0 {
		t.Errorf("cached object keeps managedFields: %v", got.GetManagedFields())
	}
	if a := got.GetAnnotations(); len(a) != 1 || a["team"] != "shop" {
		t.Errorf("cached annotations %d (last-applied %d bytes), want team=shop only", len(a), len(a["kubectl.kubernetes.io/last-applied-configuration"]))
	}
	if spec, _, _ := unstructured.NestedMap(got.Object, "spec"); !reflect.DeepEqual(spec, map[string]any{"hosts": []any{"a"}}) || got.GetGeneration() != 1 {
		t.Errorf("cached object lost what the Source reads: spec %v generation %d", spec, got.GetGeneration())
	}
	item, ok, err := f.src.crds.GetByKey("virtualservices.networking.istio.io")
	if err != nil || !ok {
		t.Fatalf("CRD not cached: %v", err)
	}
	if u := item.(*unstructured.Unstructured); u.Object["spec"] != nil {
		t.Errorf("cached CRD keeps its spec (%d top-level fields)", len(u.Object))
	}
	if status, _, _, _ := accepted(f.status(t, vsGVR, "default", "a")); status != "True" {
		t.Errorf("Accepted=%q written from the slim copy, want True", status)
	}
}

// batchStore is a fakeStore that applies batches, all or none.
type batchStore struct {
	*fakeStore
	batches int // ApplyAll calls
}

func (b *batchStore) ApplyAll(ctx context.Context, objs []Object, docs [][]byte) (map[int]*Refusal, error) {
	b.mu.Lock()
	b.batches++
	b.mu.Unlock()
	refused := map[int]*Refusal{}
	for i, d := range docs {
		switch {
		case strings.Contains(string(d), "invalid"):
			refused[i] = &Refusal{Reason: "Invalid", Message: `field "invalid" is not supported by Sigil`}
		case strings.Contains(string(d), "refuse"):
			return refused, &Refusal{Reason: "Conflict", Message: "a document of the batch is refused"}
		}
	}
	for i, o := range objs {
		if refused[i] == nil {
			b.mu.Lock()
			b.docs[o] = string(docs[i])
			b.mu.Unlock()
		}
	}
	return refused, nil
}

// TestConfigFromCRDsStartIsLinear: the objects present at start reach
// the Store in a few batched writes, not one write each (each write
// checks the whole configuration: n writes were quadratic in n), and
// each still gets its own answer: the refused ones alone, the others
// accepted beside them.
func TestConfigFromCRDsStartIsLinear(t *testing.T) {
	tests := []struct {
		n         int
		bad       []int // refused in a batch only
		invalid   []int // refused on their own
		maxWrites int   // ApplyAll and Apply calls at start
	}{
		// One write, plus per refused object two per halving (log2 80 <
		// 7) and its retry once the others were accepted. (Under 100
		// objects: the fake API server's watch holds 100 events.)
		{n: 80, maxWrites: 1},
		{n: 80, bad: []int{7}, maxWrites: 1 + (2*7 + 1)},
		{n: 80, bad: []int{0, 60}, maxWrites: 1 + 2*(2*7+1)},
		// Refused on their own (ApplyAll names them): no halving.
		{n: 80, invalid: []int{3, 4, 70}, maxWrites: 1 + 3},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d objects, %d+%d refused", tt.n, len(tt.bad), len(tt.invalid)), func(t *testing.T) {
			bad := map[int]bool{}
			for _, i := range tt.bad {
				bad[i] = true
			}
			for _, i := range tt.invalid {
				bad[i] = true
			}
			var objs []runtime.Object
			for i := range tt.n {
				spec := map[string]any{"hosts": []any{"a"}}
				if bad[i] {
					spec = map[string]any{"refuse": true}
				}
				if slices.Contains(tt.invalid, i) {
					spec = map[string]any{"invalid": true}
				}
				objs = append(objs, obj(vsGVR, "VirtualService", "default", fmt.Sprintf("vs-%03d", i), 1, spec))
			}
			store := &batchStore{fakeStore: newFakeStore()}
			f := newFixture(t, store, nil, nil, []*metav1.APIResourceList{istioServed}, objs...)
			store.mu.Lock()
			writes := store.batches
			for _, n := range store.applied {
				writes += n
			}
			store.mu.Unlock()
			if writes > tt.maxWrites {
				t.Errorf("%d writes at start for %d objects, want at most %d", writes, tt.n, tt.maxWrites)
			}
			for i := range tt.n {
				name := fmt.Sprintf("vs-%03d", i)
				_, stored := store.doc(Object{Group: "networking.istio.io", Kind: "VirtualService", Namespace: "default", Name: name})
				status, _, _, gen := accepted(f.status(t, vsGVR, "default", name))
				if want := !bad[i]; stored != want || (status == "True") != want || gen != 1 {
					t.Fatalf("%s: stored %v, Accepted=%s (generation %d); want stored and accepted %v", name, stored, status, gen, want)
				}
			}
		})
	}
}
