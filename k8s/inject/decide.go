package inject

import (
	"context"
	"fmt"
	"slices"

	"github.com/sigil-mesh/sigil/naming"
	corev1 "k8s.io/api/core/v1"
)

// NamespaceLabels gives the labels of a namespace; the server backs it
// with an informer's cache. An error fails the admission (closed).
type NamespaceLabels interface {
	NamespaceLabels(ctx context.Context, name string) (map[string]string, error)
}

// verdict is whether a Pod gets the sidecar, and why (for the log).
type verdict struct {
	inject bool
	reason string
}

// decide applies the injection rules to pod, in namespace ns, in order:
// never-injected namespaces, already injected, the opt-out annotation,
// host network, then the opt-in labels (the Pod's, then its namespace's).
// An error is a Pod the injector must refuse rather than skip: a
// malformed opt-out annotation, or a namespace whose labels are unknown.
func (i *Injector) decide(ctx context.Context, ns string, pod *corev1.Pod) (verdict, error) {
	if slices.Contains(i.cfg.skip, ns) {
		return verdict{reason: "namespace is never injected"}, nil
	}
	if hasContainer(pod, ProxyContainer) {
		return verdict{reason: "already injected"}, nil
	}
	switch v, ok := pod.Annotations[AnnotationInject]; {
	case !ok, v == "true":
	case v == "false":
		return verdict{reason: "opted out by annotation " + AnnotationInject}, nil
	default:
		return verdict{}, fmt.Errorf("inject: annotation %s: %s, want \"true\" or \"false\"", AnnotationInject, naming.Quote(v))
	}
	if pod.Spec.HostNetwork {
		// The redirect would rewrite the node's own iptables.
		return verdict{reason: "host network"}, nil
	}
	if pod.Labels[LabelInject] == LabelInjectEnabled {
		return verdict{inject: true, reason: "pod label " + LabelInject}, nil
	}
	labels, err := i.namespaces.NamespaceLabels(ctx, ns)
	if err != nil {
		return verdict{}, fmt.Errorf("inject: labels of namespace %s: %w", ns, err)
	}
	if labels[LabelInject] == LabelInjectEnabled {
		return verdict{inject: true, reason: "namespace label " + LabelInject}, nil
	}
	return verdict{reason: "not opted in"}, nil
}

// hasContainer reports whether any container of pod (init, app or
// ephemeral) is named name.
func hasContainer(pod *corev1.Pod, name string) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return true
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == name {
			return true
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}
