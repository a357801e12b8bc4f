package k8sattest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sigil-mesh/sigil/kube"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Pods is the agent's view of the pods bound to its node: an informer
// whose list and watch carry the field selector spec.nodeName=<node>, so
// the API server sends this node's pods only (SPIRE asks the node's
// kubelet instead; the API server serves the same set without kubelet
// credentials). A pod on another node is never in it.
type Pods struct {
	node     string
	informer cache.SharedIndexInformer

	mu      sync.Mutex
	changed chan struct{} // closed and replaced at each add or update
}

// uidIndex indexes the informer's pods by metadata.uid.
const uidIndex = "uid"

// NewPods returns the pods of node, not yet started (Run starts them).
func NewPods(client kubernetes.Interface, node string) (*Pods, error) {
	if node == "" {
		return nil, errors.New("k8sattest: a node name is required")
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}))
	inf := factory.Core().V1().Pods().Informer()
	p := &Pods{node: node, informer: inf, changed: make(chan struct{})}
	if err := inf.AddIndexers(cache.Indexers{uidIndex: func(obj any) ([]string, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return nil, nil
		}
		return []string{string(pod.UID)}, nil
	}}); err != nil {
		return nil, fmt.Errorf("k8sattest: %w", err)
	}
	// The attestor reads metadata, spec.serviceAccountName, nodeName and
	// container statuses; managed fields are most of a pod's bytes.
	if err := inf.SetTransform(func(obj any) (any, error) {
		if pod, ok := obj.(*corev1.Pod); ok {
			pod.ManagedFields = nil
		}
		return obj, nil
	}); err != nil {
		return nil, fmt.Errorf("k8sattest: %w", err)
	}
	wake := func(any) { p.wake() }
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    wake,
		UpdateFunc: func(_, obj any) { p.wake() },
	}); err != nil {
		return nil, fmt.Errorf("k8sattest: %w", err)
	}
	return p, nil
}

// Start starts the informer; it runs until ctx is done, and done is
// closed when it has stopped.
func (p *Pods) Start(ctx context.Context) (done <-chan struct{}) {
	return kube.RunInformer(ctx, p.informer)
}

// Synced returns once the informer has listed the node's pods, or an
// error when ctx ends first (the API server unreachable, or the agent not
// allowed to list pods).
func (p *Pods) Synced(ctx context.Context) error {
	return kube.WaitSynced(ctx, p.informer, "the pods of node "+p.node)
}

// Get returns the pod with this UID if it is bound to the node.
func (p *Pods) Get(uid string) (*corev1.Pod, bool) {
	objs, err := p.informer.GetIndexer().ByIndex(uidIndex, uid)
	if err != nil || len(objs) != 1 {
		return nil, false
	}
	pod, ok := objs[0].(*corev1.Pod)
	// The field selector already keeps other nodes' pods out; checked
	// again, so no informer set up otherwise can hand one out.
	if !ok || pod.Spec.NodeName != p.node {
		return nil, false
	}
	return pod, true
}

// Wait returns the pod with this UID, waiting until ctx ends for the
// informer to receive it: a pod's first call can come before the watch
// event of the pod's creation reaches the agent.
func (p *Pods) Wait(ctx context.Context, uid string) (*corev1.Pod, bool) {
	for {
		changed := p.changes()
		if pod, ok := p.Get(uid); ok {
			return pod, true
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-changed:
		}
	}
}

func (p *Pods) changes() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

func (p *Pods) wake() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.changed)
	p.changed = make(chan struct{})
}
