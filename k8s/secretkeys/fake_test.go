package secretkeys

import (
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// casClientset is a fake clientset whose Secrets have resourceVersions
// and whose updates are compare-and-swap on them, as the API server's:
// client-go's object tracker keeps neither.
func casClientset() *fake.Clientset {
	client := fake.NewClientset()
	var mu sync.Mutex
	next := 0
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	client.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		sec := a.(k8stesting.CreateAction).GetObject().(*corev1.Secret).DeepCopy()
		next++
		sec.ResourceVersion = strconv.Itoa(next)
		if err := client.Tracker().Create(gvr, sec, a.GetNamespace()); err != nil {
			return true, nil, err
		}
		return true, sec, nil
	})
	client.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		sec := a.(k8stesting.UpdateAction).GetObject().(*corev1.Secret).DeepCopy()
		cur, err := client.Tracker().Get(gvr, a.GetNamespace(), sec.Name)
		if err != nil {
			return true, nil, err
		}
		if cur.(*corev1.Secret).ResourceVersion != sec.ResourceVersion {
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), sec.Name, nil)
		}
		next++
		sec.ResourceVersion = strconv.Itoa(next)
		if err := client.Tracker().Update(gvr, sec, a.GetNamespace()); err != nil {
			return true, nil, err
		}
		return true, sec, nil
	})
	return client
}
