package crdsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/kube"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Store is where objects are mirrored: the server's configuration.
type Store interface {
	// Apply takes one object's document: apiVersion, kind,
	// metadata.name and metadata.namespace, and spec, as JSON. A
	// *Refusal error is the answer for this generation of the object;
	// any other error is retried with backoff.
	Apply(ctx context.Context, obj Object, doc []byte) error
	// Delete removes what obj put in the store; nothing when it holds
	// nothing of it.
	Delete(ctx context.Context, obj Object) error
	// Stored lists the objects the store holds something of.
	Stored(ctx context.Context) ([]Object, error)
}

// Options configure a Source.
type Options struct {
	Dynamic   dynamic.Interface
	Discovery discovery.DiscoveryInterface
	Store     Store
	// Kinds are the kinds to watch where their CRDs are installed;
	// empty means VirtualService, DestinationRule and Policy.
	Kinds []Kind
	// IsLeader says whether this replica writes status; nil means it
	// does (one replica, or no leader election).
	IsLeader func() bool
	Log      *slog.Logger
	Now      func() time.Time
	// Rescan is how often discovery is asked again for the kinds'
	// CRDs, beside every change to a CRD (default one minute); each
	// rescan also removes from the Store the objects Kubernetes no
	// longer has.
	Rescan time.Duration
	// Resync is the informers' resync period (default ten minutes):
	// every object is looked at again, and its status rewritten if
	// someone changed it.
	Resync time.Duration
}

// Source mirrors objects from the API server into a Store.
type Source struct {
	o     Options
	queue workqueue.TypedRateLimitingInterface[key]
	wake  chan struct{}

	crds cache.Store // the CustomResourceDefinitions, by name

	mu       sync.Mutex
	watching map[int]*watch // by index in o.Kinds
	answers  map[key]answer // the last answer per object
	// epoch moves at every change an object made to the Store and at
	// every rescan: a refused object is applied again only in a later
	// epoch (or at a change of its own), since only another change can
	// resolve a conflict, and sigil apply's are seen at the rescan.
	epoch  uint64
	leader bool // IsLeader at the last rescan
}

// key is an object in the queue: its kind's index and its name.
type key struct {
	kind            int
	namespace, name string
}

// watch is an informer on one kind's served version.
type watch struct {
	gvr       schema.GroupVersionResource
	hasStatus bool
	informer  cache.SharedIndexInformer
	stop      context.CancelFunc
}

// answer is what the Store said about one generation of an object.
type answer struct {
	uid        string
	generation int64
	refusal    *Refusal // nil: accepted
	epoch      uint64   // Source.epoch when it was given
	// wroteOver is the resourceVersion of the copy whose status this
	// answer was written over: a cached copy still at it predates the
	// write (its update event is on its way), so it is not written again.
	wroteOver string
	wrote     bool
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// New checks o and returns a Source; Start runs it.
func New(o Options) (*Source, error) {
	if o.Dynamic == nil || o.Discovery == nil || o.Store == nil {
		return nil, errors.New("crdsource: Dynamic, Discovery and Store are required")
	}
	if len(o.Kinds) == 0 {
		o.Kinds = []Kind{VirtualService, DestinationRule, Policy}
	}
	if o.IsLeader == nil {
		o.IsLeader = func() bool { return true }
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rescan <= 0 {
		o.Rescan = time.Minute
	}
	if o.Resync <= 0 {
		o.Resync = 10 * time.Minute
	}
	return &Source{
		o:        o,
		queue:    workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[key]()),
		wake:     make(chan struct{}, 1),
		watching: map[int]*watch{},
		answers:  map[key]answer{},
	}, nil
}

// Start watches the CRDs, starts an informer for every kind the API
// server serves, and mirrors the objects present (and removes from the
// Store those gone) before it returns; then it keeps mirroring until ctx
// is done, in goroutines counted in wg.
func (s *Source) Start(ctx context.Context, wg *sync.WaitGroup) error {
	if err := s.canList(ctx, crdGVR); err != nil {
		return err
	}
	crds := dynamicinformer.NewFilteredDynamicInformer(s.o.Dynamic, crdGVR, "", s.o.Resync, cache.Indexers{}, nil).Informer()
	if err := crds.SetTransform(crdNameOnly); err != nil {
		return fmt.Errorf("crdsource: %w", err)
	}
	poke := func(any) { s.poke() }
	if _, err := crds.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, n any) { s.poke() }, DeleteFunc: poke}); err != nil {
		return fmt.Errorf("crdsource: %w", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		crds.Run(ctx.Done())
	}()
	if err := kube.WaitSynced(ctx, crds, "customresourcedefinitions"); err != nil {
		return fmt.Errorf("crdsource: %w", err)
	}
	s.crds = crds.GetStore()
	if err := s.rescan(ctx, wg); err != nil {
		return err
	}
	// The objects present are queued by their informers' first list:
	// mirror them now, so the server starts with Kubernetes' config.
	s.syncAll(ctx)
	wg.Add(3)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		s.queue.ShutDown()
		s.stopAll()
	}()
	go func() {
		defer wg.Done()
		for s.next(ctx) {
		}
	}()
	go func() {
		defer wg.Done()
		s.rescanLoop(ctx, wg)
	}()
	return nil
}

// crdNameOnly is the CRD informer's transform: of a
// CustomResourceDefinition (its OpenAPI schema can be hundreds of
// kilobytes, and the informer holds every CRD of the cluster) only what
// pending and the change events read, its name and version.
func crdNameOnly(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	out := &unstructured.Unstructured{}
	out.SetAPIVersion(u.GetAPIVersion())
	out.SetKind(u.GetKind())
	out.SetName(u.GetName())
	out.SetUID(u.GetUID())
	out.SetResourceVersion(u.GetResourceVersion())
	return out, nil
}

func (s *Source) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Source) rescanLoop(ctx context.Context, wg *sync.WaitGroup) {
	t := time.NewTicker(s.o.Rescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		}
		if err := s.rescan(ctx, wg); err != nil && ctx.Err() == nil {
			s.o.Log.Warn("kubernetes configuration: rescan failed; retried at the next", "error", err, "retry_in", s.o.Rescan.String())
		}
	}
}

// rescan asks discovery which kinds are served, starts and stops
// informers to match, removes from the Store what Kubernetes no longer
// has, and, when this replica just became the leader, queues every
// object so that its status is written.
func (s *Source) rescan(ctx context.Context, wg *sync.WaitGroup) error {
	var errs []error
	for i, k := range s.o.Kinds {
		gvr, hasStatus, err := s.served(k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.mu.Lock()
		w := s.watching[i]
		s.mu.Unlock()
		switch {
		case w != nil && w.gvr == gvr:
			continue
		case w != nil:
			s.o.Log.Info("kubernetes configuration: kind no longer served; stopped watching", "kind", k.Kind+"."+k.Group, "version", w.gvr.Version)
			s.stop(i)
		}
		if gvr.Resource == "" {
			continue
		}
		if err := s.watch(ctx, wg, i, gvr, hasStatus); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.sweep(ctx); err != nil {
		errs = append(errs, err)
	}
	s.queueRefused()
	leader := s.o.IsLeader()
	s.mu.Lock()
	became := leader && !s.leader
	s.leader = leader
	s.mu.Unlock()
	if became {
		s.queueAll()
	}
	return errors.Join(errs...)
}

// served returns the version of k the API server serves (the first of
// k.Versions), with whether it has the status subresource; a zero GVR
// when none is served.
func (s *Source) served(k Kind) (schema.GroupVersionResource, bool, error) {
	for _, v := range k.Versions {
		list, err := s.o.Discovery.ServerResourcesForGroupVersion(k.Group + "/" + v)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return schema.GroupVersionResource{}, false, fmt.Errorf("crdsource: discovering %s/%s: %w", k.Group, v, err)
		}
		found, status := false, false
		for _, r := range list.APIResources {
			switch r.Name {
			case k.Resource:
				found = true
			case k.Resource + "/status":
				status = true
			}
		}
		if found {
			return schema.GroupVersionResource{Group: k.Group, Version: v, Resource: k.Resource}, status, nil
		}
	}
	return schema.GroupVersionResource{}, false, nil
}

// canList lists one object of gvr: an informer whose list is refused
// (RBAC) retries for ever and never syncs, so the refusal is found here
// and named instead.
func (s *Source) canList(ctx context.Context, gvr schema.GroupVersionResource) error {
	if _, err := s.o.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return fmt.Errorf("crdsource: listing %s (the server needs get, list and watch on them): %w", gvr.GroupResource(), err)
	}
	return nil
}

// watch starts an informer on kind i's gvr and waits for its first list.
func (s *Source) watch(ctx context.Context, wg *sync.WaitGroup, i int, gvr schema.GroupVersionResource, hasStatus bool) error {
	if err := s.canList(ctx, gvr); err != nil {
		return err
	}
	inf := dynamicinformer.NewFilteredDynamicInformer(s.o.Dynamic, gvr, "", s.o.Resync, cache.Indexers{}, nil).Informer()
	// The cache holds every object of the kind: without its
	// managedFields and kubectl's last-applied copy, which the document
	// and the status never read.
	if err := inf.SetTransform(kube.Slim); err != nil {
		return fmt.Errorf("crdsource: %w", err)
	}
	enqueue := func(obj any) {
		if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			ns, name, _ := cache.SplitMetaNamespaceKey(k)
			s.queue.Add(key{kind: i, namespace: ns, name: name})
		}
	}
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) }, DeleteFunc: enqueue})
	if err != nil {
		return fmt.Errorf("crdsource: %w", err)
	}
	wctx, stop := context.WithCancel(ctx)
	// In place before the first list, so the worker finds the objects
	// the handler queues.
	s.mu.Lock()
	s.watching[i] = &watch{gvr: gvr, hasStatus: hasStatus, informer: inf, stop: stop}
	s.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		inf.Run(wctx.Done())
	}()
	// The registration's HasSynced: the first list has reached the
	// handler, so every object present is queued.
	if err := kube.WaitSynced(wctx, reg, gvr.String()); err != nil {
		s.stop(i)
		return fmt.Errorf("crdsource: %w", err)
	}
	if !hasStatus {
		s.o.Log.Warn("kubernetes configuration: the CRD has no status subresource; objects get no Accepted condition", "kind", s.o.Kinds[i].Kind+"."+gvr.Group, "version", gvr.Version)
	}
	s.o.Log.Info("kubernetes configuration: watching", "kind", s.o.Kinds[i].Kind+"."+gvr.Group, "version", gvr.Version)
	return nil
}

// stop stops watching kind i. Its answers go: the accepted objects'
// resources are removed by the sweep that follows, and the refused ones
// are no longer there to count.
func (s *Source) stop(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.watching[i]; w != nil {
		w.stop()
		delete(s.watching, i)
	}
	for k, a := range s.answers {
		if k.kind == i && a.refusal != nil {
			delete(s.answers, k)
		}
	}
}

func (s *Source) stopAll() {
	for i := range s.o.Kinds {
		s.stop(i)
	}
}

// sweep queues the objects the Store holds that are not in an
// informer's cache (deleted while the server was down, or with their
// CRD), and the accepted ones the Store no longer holds, so that next
// removes or re-applies them. Stored objects of a kind not watched at
// all are removed here.
func (s *Source) sweep(ctx context.Context) error {
	stored, err := s.o.Store.Stored(ctx)
	if err != nil {
		return fmt.Errorf("crdsource: listing stored objects: %w", err)
	}
	held := map[key]bool{}
	var errs []error
	for _, obj := range stored {
		i := s.kindIndex(obj)
		if i < 0 {
			if err := s.o.Store.Delete(ctx, obj); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		k := key{kind: i, namespace: obj.Namespace, name: obj.Name}
		held[k] = true
		if s.pending(i) {
			continue
		}
		if _, ok := s.cached(k); !ok {
			s.queue.Add(k)
		}
	}
	s.mu.Lock()
	for k, a := range s.answers {
		if a.refusal == nil && !held[k] {
			delete(s.answers, k)
			s.queue.Add(k)
		}
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

// pending says whether kind i is not watched while its CRD exists:
// discovery lags a CRD's creation, so its objects are not taken for gone
// until the kind is served (a server restarting beside a CRD just
// installed must not drop their configuration meanwhile).
func (s *Source) pending(i int) bool {
	s.mu.Lock()
	w := s.watching[i]
	s.mu.Unlock()
	if w != nil || s.crds == nil {
		return false
	}
	k := s.o.Kinds[i]
	_, exists, err := s.crds.GetByKey(k.Resource + "." + k.Group)
	return exists && err == nil
}

func (s *Source) kindIndex(obj Object) int {
	for i, k := range s.o.Kinds {
		if k.Group == obj.Group && k.Kind == obj.Kind {
			return i
		}
	}
	return -1
}

// queueAll queues every cached object.
func (s *Source) queueAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, w := range s.watching {
		for _, k := range w.informer.GetStore().ListKeys() {
			ns, name, _ := cache.SplitMetaNamespaceKey(k)
			s.queue.Add(key{kind: i, namespace: ns, name: name})
		}
	}
}

// queueRefused starts a new epoch and queues every object whose last
// answer was a refusal: a change to the configuration may resolve its
// conflict.
func (s *Source) queueRefused() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	for k, a := range s.answers {
		if a.refusal != nil {
			s.queue.Add(k)
		}
	}
}

// Count is how many objects of a kind have a given answer.
type Count struct {
	Kind     string // VirtualService
	Accepted bool
	Objects  int
}

// Counts returns, per kind watched and answer, how many objects got it
// (the last answer of each object this replica mirrors).
func (s *Source) Counts() []Count {
	s.mu.Lock()
	defer s.mu.Unlock()
	type ka struct {
		kind     int
		accepted bool
	}
	n := map[ka]int{}
	for i := range s.watching {
		n[ka{i, true}], n[ka{i, false}] = 0, 0
	}
	for k, a := range s.answers {
		n[ka{k.kind, a.refusal == nil}]++
	}
	out := make([]Count, 0, len(n))
	for c, v := range n {
		out = append(out, Count{Kind: s.o.Kinds[c.kind].Kind, Accepted: c.accepted, Objects: v})
	}
	return out
}
