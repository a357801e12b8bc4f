package kube

import (
	"context"
	"fmt"

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
