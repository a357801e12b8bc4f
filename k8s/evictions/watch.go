package evictions

import (
	"context"
	"fmt"
	"time"

	"github.com/sigil-mesh/sigil/kube"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// SyncTimeout bounds Watch's wait for the first read of the ConfigMap: a
// server that cannot read the evictions does not start (it could not
// refuse an evicted agent).
const SyncTimeout = time.Minute

// Watch follows the ConfigMap with an informer limited to it by name
// (list and watch with a metadata.name field selector, which RBAC
// authorizes by resourceNames) and keeps Lookup's view of it. changed is
// called, from the informer's goroutine, with the evictions that are new
// or newer than before; bad entries are passed to invalid, one error each
// (the entry is left out, or kept when only its key is wrong or its time
// is more than MaxFuture ahead, then read as now). Watch
// returns once the informer has synced, or with an error when ctx ends
// or SyncTimeout passes first; the informer runs until ctx is done, and
// then done is closed.
func (s *Store) Watch(ctx context.Context, changed func([]Eviction), invalid func(error)) (done <-chan struct{}, err error) {
	lw := kube.NamedListWatch(s.name, s.maps.List, s.maps.Watch)
	inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, s.client), &corev1.ConfigMap{}, cache.SharedIndexInformerOptions{})
	seen := func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok || cm.Name != s.name {
			return
		}
		byID, errs := Parse(cm, s.now())
		for _, err := range errs {
			invalid(err)
		}
		if fresh := s.take(byID, size(cm.Data)); len(fresh) > 0 {
			changed(fresh)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    seen,
		UpdateFunc: func(_, obj any) { seen(obj) },
		// Deleted by hand: the evictions are gone with it.
		DeleteFunc: func(any) { s.take(map[string]Eviction{}, 0) },
	}); err != nil {
		return nil, fmt.Errorf("evictions: %w", err)
	}
	s.mu.Lock()
	s.synced = inf.HasSynced
	s.mu.Unlock()
	done = kube.RunInformer(ctx, inf)
	if err := kube.WaitSyncedWithin(ctx, SyncTimeout, inf, "ConfigMap "+s.name); err != nil {
		return done, fmt.Errorf("evictions: %w", err)
	}
	return done, nil
}

// take makes byID (of a ConfigMap holding bytes of data) Lookup's view
// and returns the evictions in it that are new or later than before.
func (s *Store) take(byID map[string]Eviction, bytes int) []Eviction {
	s.mu.Lock()
	defer s.mu.Unlock()
	var fresh []Eviction
	for id, e := range byID {
		if old, ok := s.byID[id]; !ok || e.At.After(old.At) {
			fresh = append(fresh, e)
		}
	}
	s.byID, s.bytes = byID, bytes
	return fresh
}
