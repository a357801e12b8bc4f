package harness

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// pollEvery is how often Eventually asks.
const pollEvery = 50 * time.Millisecond

// Eventually calls try every 50 ms until it returns nil, and fails the
// test, naming what and try's last error, once within has passed: for
// states no event announces (a process's own HTTP view, the API server's
// authorizer cache). A state the API server stores is awaited with
// WaitObject instead, which watches.
func Eventually(t testing.TB, what string, within time.Duration, try func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := try()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(pollEvery) // nothing to await: see above
	}
}

// WaitObject watches the object namespace/name of gvr until cond holds of
// it (as the API server stores it, status and generation included) and
// returns it; it fails the test, naming what, once within has passed. A
// watch opened without a resourceVersion starts with the object's
// current state, so a condition already true returns at once; one the
// API server ends early is opened again.
func (k *Kube) WaitObject(t testing.TB, gvr schema.GroupVersionResource, namespace, name, what string, within time.Duration, cond func(*unstructured.Unstructured) bool) *unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	objs := k.Clients.Dynamic.Resource(gvr).Namespace(namespace)
	var last *unstructured.Unstructured
	for ctx.Err() == nil {
		w, err := objs.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			t.Fatalf("%s: watching %s %s/%s: %v", what, gvr.Resource, namespace, name, err)
		}
		for ev := range w.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			last = u
			if cond(u) {
				w.Stop()
				return u
			}
		}
		w.Stop()
	}
	if last == nil {
		t.Fatalf("%s: %s %s/%s not seen within %s", what, gvr.Resource, namespace, name, within)
	}
	t.Fatalf("%s: not within %s; %s %s/%s's last status: %v", what, within, gvr.Resource, namespace, name, last.Object["status"])
	return nil
}

// ObjectCondition returns the condition of type typ among the
// conditions at path (e.g. "status", "conditions"), and whether one is
// there.
func ObjectCondition(obj map[string]any, typ string, path ...string) (map[string]any, bool) {
	conds, _, _ := unstructured.NestedSlice(obj, path...)
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return m, true
		}
	}
	return nil, false
}
