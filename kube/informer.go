package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// RunInformer runs inf until ctx is done; done is closed once it has
// stopped, so its owner can wait for it.
func RunInformer(ctx context.Context, inf cache.SharedInformer) (done <-chan struct{}) {
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		inf.RunWithContext(ctx)
	}()
	return stopped
}

// Synced is whatever says that an informer's first list is in: a
// cache.SharedInformer, a handler's cache.ResourceEventHandlerRegistration
// (the list has also reached that handler: what a part sharing an
// informer started before its handler was added waits for), or a
// cache.Controller.
type Synced interface{ HasSynced() bool }

// WaitSynced returns once s has listed its objects, or an error naming
// what it lists when ctx ends first (the API server unreachable, or the
// list not allowed: an informer whose list is refused retries for ever,
// so the caller bounds ctx, as WaitSyncedWithin does).
func WaitSynced(ctx context.Context, s Synced, what string) error {
	if cache.WaitForCacheSync(ctx.Done(), s.HasSynced) {
		return nil
	}
	err := context.Cause(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("kube: listing %s: %w (may this client list and watch them? RBAC)", what, err)
	}
	return fmt.Errorf("kube: listing %s: %w", what, err)
}

// WaitSyncedWithin is WaitSynced bounded by limit.
func WaitSyncedWithin(ctx context.Context, limit time.Duration, s Synced, what string) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	return WaitSynced(ctx, s, what)
}

// NewInformers returns the informer factory a daemon's parts share, so
// that each kind is listed and watched once and cached once however many
// parts read it (client-go's shared informers; a Pod informer per part
// doubled the API server's load and the daemon's memory on a large
// cluster). Its transform is Slim. The caller owns it: Start it with the
// daemon's context once the parts asked for their informers, and call
// Shutdown after that context ends.
func NewInformers(client kubernetes.Interface) informers.SharedInformerFactory {
	return informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(Slim))
}

// Slim is the transform of NewInformers' informers and of crdsource's
// dynamic ones: it slims every object's metadata (SlimMeta) and keeps of a Pod
// only the fields the server's parts read — metadata name, namespace,
// uid, resourceVersion and labels, spec.nodeName and
// spec.serviceAccountName, status.phase — for the server holds every pod
// of the cluster. A part that reads another Pod field adds it here (its
// tests build their informers with NewInformers, so they fail until it
// does).
func Slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, UID: o.UID, ResourceVersion: o.ResourceVersion, Labels: o.Labels},
			Spec:       corev1.PodSpec{NodeName: o.Spec.NodeName, ServiceAccountName: o.Spec.ServiceAccountName},
			Status:     corev1.PodStatus{Phase: o.Status.Phase},
		}, nil
	case metav1.Object:
		SlimMeta(o)
	}
	return obj, nil
}

// NamedListWatch lists and watches the one object called name through
// list and watchFn (a typed client's List and Watch), with a metadata.name
// field selector: RBAC authorizes such a list or watch by the rule's
// resourceNames, so a part may follow its own object and no other.
func NamedListWatch[L runtime.Object](name string, list func(context.Context, metav1.ListOptions) (L, error), watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) *cache.ListWatch {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return watchFn(ctx, o)
		},
	}
}

// LastAppliedAnnotation is kubectl's copy of the object as last applied
// (kubectl apply without --server-side): as large as the object itself.
const LastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// SlimMeta drops from o's metadata what no part reads and informer
// caches would hold for every object: managedFields (most of an object's
// bytes) and LastAppliedAnnotation. An object written back from a cache
// through a status subresource keeps both on the API server (it ignores
// metadata there, and keeps managedFields a request leaves empty).
func SlimMeta(o metav1.Object) {
	o.SetManagedFields(nil)
	if a := o.GetAnnotations(); a[LastAppliedAnnotation] != "" {
		delete(a, LastAppliedAnnotation)
		if len(a) == 0 {
			a = nil
		}
		o.SetAnnotations(a)
	}
}
