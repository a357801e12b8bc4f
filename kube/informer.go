package kube

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
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

// WaitSynced returns once inf has listed its objects, or an error naming
// what it lists when ctx ends first (the API server unreachable, or the
// list not allowed).
func WaitSynced(ctx context.Context, inf cache.SharedInformer, what string) error {
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("kube: listing %s: %w", what, context.Cause(ctx))
	}
	return nil
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
