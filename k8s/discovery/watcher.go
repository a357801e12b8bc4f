package discovery

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// State is the mesh's view of Kubernetes's services at one revision. A
// published State is never changed.
type State struct {
	// Revision moves (by one) whenever a Service comes or goes or the
	// endpoints of one change; 0 before the first sync.
	Revision int64
	// Services holds every Service but ExternalName ones, with its
	// endpoints (nil: none ready).
	Services map[naming.Service][]Endpoint
}

// Has reports whether svc is a Kubernetes Service.
func (s *State) Has(svc naming.Service) bool {
	_, ok := s.Services[svc]
	return ok
}

// Options configure a Watcher.
type Options struct {
	// TrustDomain is the mesh's: endpoints' identities are in it.
	TrustDomain spiffeid.TrustDomain
	// Log receives the services whose endpoints were left out for want
	// of a known pod.
	Log *slog.Logger
	// OnChange is called after the State moved, without locks held (the
	// server wakes its config streams).
	OnChange func()
	// SyncTimeout bounds Start's wait for the first list of every kind
	// (0: DefaultSyncTimeout).
	SyncTimeout time.Duration
}

// DefaultSyncTimeout is how long Start waits for the informers' first
// lists: long enough for a large cluster's pods, short enough that a
// server without the RBAC to list them says so instead of hanging.
const DefaultSyncTimeout = 2 * time.Minute

// Watcher follows Services, EndpointSlices and Pods of every namespace.
type Watcher struct {
	opts     Options
	factory  informers.SharedInformerFactory
	services corelisters.ServiceLister
	slices   cache.Indexer
	pods     corelisters.PodLister

	mu      sync.Mutex // serializes refreshes
	synced  bool
	dropped map[naming.Service]int // last logged count, per service
	state   atomic.Pointer[State]
}

// Index names on the EndpointSlice informer.
const (
	byService = "sigil.dev/service" // NAMESPACE/NAME of the Service a slice belongs to
	byPod     = "sigil.dev/pod"     // NAMESPACE/NAME of every Pod a slice's endpoints name
)

// New makes a Watcher on the informers of factory, which the caller owns
// and may share with other parts (kube.NewInformers: its transform keeps
// of a Pod what discovery reads, name, namespace, uid, labels and service
// account); Start starts it.
func New(factory informers.SharedInformerFactory, opts Options) *Watcher {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{opts: opts, dropped: map[naming.Service]int{}}
	w.state.Store(&State{Services: map[naming.Service][]Endpoint{}})
	w.factory = factory
	w.services = w.factory.Core().V1().Services().Lister()
	w.pods = w.factory.Core().V1().Pods().Lister()
	w.slices = w.factory.Discovery().V1().EndpointSlices().Informer().GetIndexer()
	return w
}

// State returns the current state.
func (w *Watcher) State() *State { return w.state.Load() }

// Start starts the informers and returns once they have synced and the
// first State is built; the informers run until ctx is done (the
// factory's owner shuts it down). A list the caller may not make (RBAC)
// makes Start fail after Options.SyncTimeout, naming the informer.
func (w *Watcher) Start(ctx context.Context) error {
	sliceInf := w.factory.Discovery().V1().EndpointSlices().Informer()
	if err := sliceInf.AddIndexers(cache.Indexers{byService: sliceService, byPod: slicePods}); err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	handlers := []struct {
		what string
		inf  cache.SharedIndexInformer
		keys func(obj any) []string
	}{
		{"services", w.factory.Core().V1().Services().Informer(), func(obj any) []string { return keyOf(obj) }},
		{"endpointslices", sliceInf, func(obj any) []string { s, _ := sliceService(obj); return s }},
		{"pods", w.factory.Core().V1().Pods().Informer(), w.podServices},
	}
	regs := make([]cache.ResourceEventHandlerRegistration, len(handlers))
	for i, h := range handlers {
		keys := h.keys
		reg, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { w.refresh(keys(obj)) },
			UpdateFunc: func(old, obj any) { w.refresh(append(keys(old), keys(obj)...)) },
			DeleteFunc: func(obj any) { w.refresh(keys(obj)) },
		})
		if err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
		regs[i] = reg
	}
	w.factory.Start(ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, cmp.Or(w.opts.SyncTimeout, DefaultSyncTimeout))
	defer cancel()
	for i, h := range handlers {
		if err := kube.WaitSynced(syncCtx, regs[i], h.what); err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
	}
	w.mu.Lock()
	w.synced = true
	w.mu.Unlock()
	all, err := w.services.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	keys := make([]string, 0, len(all))
	for _, s := range all {
		keys = append(keys, s.Namespace+"/"+s.Name)
	}
	w.refresh(keys)
	return nil
}

// refresh rebuilds the Services named by keys (NAMESPACE/NAME) and
// publishes a new State when any changed. Events before the sync are
// left to the full build Start makes after it.
func (w *Watcher) refresh(keys []string) {
	if len(keys) == 0 {
		return
	}
	w.mu.Lock()
	if !w.synced {
		w.mu.Unlock()
		return
	}
	cur := w.state.Load()
	var next map[naming.Service][]Endpoint
	for _, key := range keys {
		ns, name, err := cache.SplitMetaNamespaceKey(key)
		if err != nil {
			continue
		}
		svc := naming.Service{Name: name, Namespace: ns}
		eps, present := w.build(svc)
		old, was := cur.Services[svc]
		if present == was && sameEndpoints(old, eps) {
			continue
		}
		if next == nil {
			next = maps.Clone(cur.Services)
		}
		if present {
			next[svc] = eps
		} else {
			delete(next, svc)
		}
	}
	if next != nil {
		w.state.Store(&State{Revision: cur.Revision + 1, Services: next})
	}
	w.mu.Unlock()
	if next != nil && w.opts.OnChange != nil {
		w.opts.OnChange()
	}
}

// build reads svc and its slices from the informers' caches. present is
// false when the Service does not exist or is an ExternalName one.
func (w *Watcher) build(svc naming.Service) (eps []Endpoint, present bool) {
	s, err := w.services.Services(svc.Namespace).Get(svc.Name)
	if err != nil || s.Spec.Type == corev1.ServiceTypeExternalName {
		if err != nil && !apierrors.IsNotFound(err) {
			w.opts.Log.Warn("service not read; its endpoints are dropped", "service", svc.String(), "error", err)
		}
		delete(w.dropped, svc)
		return nil, false
	}
	objs, _ := w.slices.ByIndex(byService, svc.Namespace+"/"+svc.Name)
	sl := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if es, ok := o.(*discoveryv1.EndpointSlice); ok {
			sl = append(sl, es)
		}
	}
	// Slices in name order: which copy of a pod listed twice wins is then
	// the same on every replica.
	slices.SortFunc(sl, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	eps, dropped := build(w.opts.TrustDomain, s, sl, func(ns, name string) *corev1.Pod {
		p, err := w.pods.Pods(ns).Get(name)
		if err != nil {
			return nil
		}
		return p
	})
	if dropped != w.dropped[svc] {
		if dropped > 0 {
			// Info, not a warning: Services without a selector (the
			// API server's own "kubernetes", external databases) have
			// such endpoints by design.
			w.opts.Log.Info("ready endpoints left out: their pod is not known, so neither is the identity they must present", "service", svc.String(), "dropped", dropped)
		}
		w.dropped[svc] = dropped
	}
	return eps, true
}

// podServices are the Services whose slices name the pod obj.
func (w *Watcher) podServices(obj any) []string {
	keys := keyOf(obj)
	if len(keys) == 0 {
		return nil
	}
	objs, _ := w.slices.ByIndex(byPod, keys[0])
	var out []string
	for _, o := range objs {
		s, _ := sliceService(o)
		out = append(out, s...)
	}
	return out
}

// keyOf is the NAMESPACE/NAME of an informer's object (of its last
// known state, for a deletion the informer missed).
func keyOf(obj any) []string {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return []string{d.Key}
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil
	}
	return []string{m.GetNamespace() + "/" + m.GetName()}
}

// sliceService indexes a slice by its Service (the
// kubernetes.io/service-name label the EndpointSlice controller sets).
func sliceService(obj any) ([]string, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + name}, nil
}

// slicePods indexes a slice by the pods its endpoints name.
func slicePods(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, ep := range s.Endpoints {
		if r := ep.TargetRef; r != nil && r.Kind == "Pod" && r.Name != "" {
			ns := r.Namespace
			if ns == "" {
				ns = s.Namespace
			}
			out = append(out, ns+"/"+r.Name)
		}
	}
	return out, nil
}

// sameEndpoints reports whether two built endpoint lists are equal.
func sameEndpoints(a, b []Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y Endpoint) bool {
		return x.Service == y.Service && x.Address == y.Address && x.ServicePort == y.ServicePort && x.Protocol == y.Protocol &&
			x.Identity == y.Identity && slices.Equal(x.ClusterIPs, y.ClusterIPs) && maps.Equal(x.Labels, y.Labels)
	})
}
