// Package podidentity gives every pod its automatic identity, as SPIRE's
// controller manager does with ClusterSPIFFEIDs: from a Pod informer over
// all nodes it synthesizes, for each pod bound to a node and not ended, a
// registration entry granting spiffe://<td>/ns/<ns>/sa/<sa> to the pod's
// node agent (spiffe://<td>/sigil/agent/k8s_psat/<cluster>/<node>) for
// the workload with selector k8s:pod-uid:<uid>. The entries live in
// memory only (the API server is their source of truth) and are read by
// parent, as the server streams and signs entries per agent: an agent is
// never handed, and never gets signed, another node's pods.
package podidentity

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// EntryIDPrefix starts the ID of every synthesized entry; the rest is the
// pod's UID, so the ID is stable for the pod's life and across servers.
const EntryIDPrefix = "k8s-pod-"

// Options configure an Index.
type Options struct {
	// TrustDomain is the server's.
	TrustDomain spiffeid.TrustDomain
	// Cluster is the cluster's name in agent IDs (--k8s-cluster).
	Cluster string
	// OnChange is called after entries were added or removed (the server
	// wakes its agents' Sync streams); never under the Index's lock.
	OnChange func()
	// Now stamps the entries' CreatedAt; nil is time.Now.
	Now func() time.Time
	// Log is where refused pods are reported.
	Log *slog.Logger
}

// Index holds the synthesized entries of the pods its informer sees.
type Index struct {
	opts    Options
	factory informers.SharedInformerFactory
	handler cache.ResourceEventHandlerRegistration // its HasSynced: every listed pod indexed

	mu       sync.RWMutex
	byParent map[string]map[string]registry.Entry // agent ID → entry ID → entry
	parentOf map[string]string                    // entry ID → agent ID
}

// New returns an Index over the pods of every namespace the Pod informer
// of factory lists, not yet started (Start starts it). The caller owns
// factory and may share it with other parts; its transform must keep of
// a Pod what an entry is made of, namespace, name, uid, spec.nodeName,
// spec.serviceAccountName and status.phase (kube.NewInformers does: on a
// large cluster the server holds every pod).
func New(factory informers.SharedInformerFactory, opts Options) (*Index, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.OnChange == nil {
		opts.OnChange = func() {}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	x := &Index{opts: opts, factory: factory, byParent: map[string]map[string]registry.Entry{}, parentOf: map[string]string{}}
	reg, err := factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { x.update(obj) },
		UpdateFunc: func(_, obj any) { x.update(obj) },
		DeleteFunc: x.delete,
	})
	if err != nil {
		return nil, fmt.Errorf("podidentity: %w", err)
	}
	x.handler = reg
	return x, nil
}

// Start starts the factory's informers not yet started (the Pod
// informer, unless a part sharing it started it already); they run until
// ctx is done, and the factory's owner shuts it down.
func (x *Index) Start(ctx context.Context) {
	x.factory.Start(ctx.Done())
}

// Synced returns once every pod has been listed and indexed, or an error
// when ctx ends first.
func (x *Index) Synced(ctx context.Context) error {
	return kube.WaitSynced(ctx, x.handler, "pods")
}

// Entries returns the synthesized entries whose parent is agent, sorted
// by SPIFFE ID then ID as the registry lists its own.
func (x *Index) Entries(agent string) []registry.Entry {
	x.mu.RLock()
	out := make([]registry.Entry, 0, len(x.byParent[agent]))
	for _, e := range x.byParent[agent] {
		out = append(out, e)
	}
	x.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].SPIFFEID != out[j].SPIFFEID {
			return out[i].SPIFFEID < out[j].SPIFFEID
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Entry returns the synthesized entry with this ID.
func (x *Index) Entry(id string) (registry.Entry, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, ok := x.byParent[x.parentOf[id]][id]
	return e, ok
}

// Synthesize returns the entry pod is given, and false for a pod given
// none: not bound to a node yet, ended (Succeeded or Failed), or whose
// names make no SPIFFE ID (then err says why).
func Synthesize(td spiffeid.TrustDomain, cluster string, pod *corev1.Pod, now time.Time) (registry.Entry, bool, error) {
	if pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return registry.Entry{}, false, nil
	}
	uid := string(pod.UID)
	// The selector carries the UID: the API server makes them, but one
	// the agent's selector parser refused would spoil the node's whole
	// snapshot.
	if uid == "" || len(uid) > 64 || !isUIDText(uid) {
		return registry.Entry{}, false, fmt.Errorf("podidentity: pod %s/%s: uid %q is not a Kubernetes UID", pod.Namespace, pod.Name, uid)
	}
	parent, err := naming.K8sPSATAgentID(td, cluster, pod.Spec.NodeName)
	if err != nil {
		return registry.Entry{}, false, fmt.Errorf("podidentity: pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default" // what the ServiceAccount admission plugin sets
	}
	id, err := naming.WorkloadID(td, pod.Namespace, sa)
	if err != nil {
		return registry.Entry{}, false, fmt.Errorf("podidentity: pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return registry.Entry{
		ID:        EntryIDPrefix + uid,
		SPIFFEID:  id.String(),
		ParentID:  parent.String(),
		Selectors: []selector.Selector{selector.K8s(selector.K8sPodUID, uid)},
		Source:    registry.SourceK8s,
		CreatedAt: now.UTC().Truncate(time.Second),
	}, true, nil
}

// isUIDText reports whether s holds only what UUIDs are written with.
func isUIDText(s string) bool {
	for i := range len(s) {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == '-') {
			return false
		}
	}
	return true
}

func (x *Index) update(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	e, ok, err := Synthesize(x.opts.TrustDomain, x.opts.Cluster, pod, x.opts.Now())
	if err != nil {
		x.opts.Log.Warn("pod given no automatic identity", "namespace", pod.Namespace, "pod", pod.Name, "error", err)
	}
	id := EntryIDPrefix + string(pod.UID)
	if !ok {
		x.remove(id)
		return
	}
	x.mu.Lock()
	old, had := x.byParent[x.parentOf[id]][id]
	if had && old.ParentID == e.ParentID && old.SPIFFEID == e.SPIFFEID {
		x.mu.Unlock()
		return // a status update: the entry is as it was
	}
	x.removeLocked(id)
	if x.byParent[e.ParentID] == nil {
		x.byParent[e.ParentID] = map[string]registry.Entry{}
	}
	x.byParent[e.ParentID][id] = e
	x.parentOf[id] = e.ParentID
	x.mu.Unlock()
	x.opts.OnChange()
}

func (x *Index) delete(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		x.remove(EntryIDPrefix + string(pod.UID))
	}
}

func (x *Index) remove(id string) {
	x.mu.Lock()
	removed := x.removeLocked(id)
	x.mu.Unlock()
	if removed {
		x.opts.OnChange()
	}
}

func (x *Index) removeLocked(id string) bool {
	parent, ok := x.parentOf[id]
	if !ok {
		return false
	}
	delete(x.byParent[parent], id)
	if len(x.byParent[parent]) == 0 {
		delete(x.byParent, parent)
	}
	delete(x.parentOf, id)
	return true
}
