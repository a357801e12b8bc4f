package server

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

// TestSharedInformersOneListPerKind: discovery and automatic identity
// both read every pod of the cluster; they share one Pod informer (one
// LIST and one WATCH against the API server, one cache), and each gets
// from it the pod fields it reads (labels for discovery, the node for
// automatic identity) through the one transform.
func TestSharedInformersOneListPerKind(t *testing.T) {
	const uid = "0b2c7e2a-1111-4c3d-9e8f-0000000000aa"
	client := fake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Port: 80}}}},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "api-a", Labels: map[string]string{discoveryv1.LabelServiceName: "api"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Port: new(int32(8080))}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "api-1", UID: uid}}},
		},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api-1", UID: types.UID(uid), Labels: map[string]string{"version": "v1"},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
			Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "api", Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		},
	)
	var lists, watches atomic.Int32
	client.PrependReactor("list", "pods", func(clienttesting.Action) (bool, runtime.Object, error) {
		lists.Add(1)
		return false, nil, nil
	})
	client.PrependWatchReactor("pods", func(clienttesting.Action) (bool, watch.Interface, error) {
		watches.Add(1)
		return false, nil, nil
	})

	s, _ := storeServer(t)
	s.cfg.td = spiffeid.RequireTrustDomainFromString("example.org")
	s.cfg.Kubernetes.Cluster = "cluster"
	s.kube = &kube.Clients{Core: client}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	s.startInformers(ctx, &wg)
	for _, p := range []kubePart{s.servicesPart(), s.podsPart()} {
		if err := p.start(ctx, &wg); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
	}

	if n, m := lists.Load(), watches.Load(); n != 1 || m > 1 {
		t.Errorf("pods listed %d times and watched %d times, want one list and at most one watch", n, m)
	}
	eps := s.kubeServicesState().Services[naming.Service{Name: "api", Namespace: "shop"}]
	if len(eps) != 1 || eps[0].Labels["version"] != "v1" || eps[0].Identity.String() != "spiffe://example.org/ns/shop/sa/api" {
		t.Errorf("discovery's endpoints %+v, want the pod's with its labels and service account", eps)
	}
	agent := "spiffe://example.org/sigil/agent/k8s_psat/cluster/node-a"
	if es := s.pods.Load().Entries(agent); len(es) != 1 || es[0].SPIFFEID != "spiffe://example.org/ns/shop/sa/api" {
		t.Errorf("automatic identity's entries for node-a %+v, want the pod's", es)
	}

	// The cache holds the slim pod only.
	obj, ok, err := s.kubeInformers.Core().V1().Pods().Informer().GetStore().GetByKey("shop/api-1")
	if err != nil || !ok {
		t.Fatalf("pod not in the shared cache: %v", err)
	}
	if p := obj.(*corev1.Pod); len(p.Spec.Containers) != 0 || len(p.ManagedFields) != 0 {
		t.Errorf("cached pod keeps fields no part reads: %+v", p)
	}

	// A later pod reaches both parts from the one informer.
	const uid2 = "0b2c7e2a-1111-4c3d-9e8f-0000000000bb"
	if _, err := client.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api-2", UID: types.UID(uid2)},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "api"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		woke := s.changes.Changed()
		if len(s.pods.Load().Entries(agent)) == 2 {
			break
		}
		select {
		case <-woke:
		case <-deadline:
			t.Fatal("the second pod never got its entry")
		}
	}
	if n := lists.Load(); n != 1 {
		t.Errorf("pods listed %d times, want once", n)
	}
}
