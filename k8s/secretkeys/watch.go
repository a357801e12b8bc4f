package secretkeys

import (
	"context"
	"fmt"
	"sync"

	"github.com/sigil-mesh/sigil/kube"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Watch follows the Secret with an informer limited to it and calls
// changed whenever it holds a resourceVersion this store did not write or
// read itself: another replica rotated the CA. It returns once the
// informer has synced and runs until ctx is done, in a goroutine counted
// in wg, so that its owner can wait for it at shutdown (none outlives
// the server).
func (s *Store) Watch(ctx context.Context, wg *sync.WaitGroup, changed func()) error {
	lw := kube.NamedListWatch(s.name, s.secrets.List, s.secrets.Watch)
	seen := func(obj any) {
		sec, ok := obj.(*corev1.Secret)
		if !ok || sec.Name != s.name || sec.ResourceVersion == s.Version() {
			return
		}
		changed()
	}
	_, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
		// The wrapper tells the reflector whether the client streams lists
		// (a fake clientset does not).
		ListerWatcher: cache.ToListWatcherWithWatchListSemantics(lw, s.client),
		ObjectType:    &corev1.Secret{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { seen(obj) },
			UpdateFunc: func(_, obj any) { seen(obj) },
		},
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctrl.RunWithContext(ctx)
	}()
	if err := kube.WaitSynced(ctx, ctrl, "Secret "+s.name); err != nil {
		return fmt.Errorf("secretkeys: %w", err)
	}
	return nil
}
