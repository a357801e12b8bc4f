package inject

import (
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Status is the value of the annotation sigil.dev/status (JSON): what the
// injector added, as Istio's sidecar.istio.io/status.
type Status struct {
	Version        int      `json:"version"`
	InitContainers []string `json:"initContainers"`
	Volumes        []string `json:"volumes"`
	Image          string   `json:"image"`
}

// statusVersion is Status.Version of what this injector adds.
const statusVersion = 1

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// pointerEscape escapes one RFC 6901 JSON Pointer token.
func pointerEscape(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// mutation builds the RFC 6902 JSON Patch that injects pod, in namespace
// ns: the redirect step and the sidecar first among the init containers
// (in that order, the Pod's own after them: they run with the mesh), the
// volumes, and the status annotation. Names the Pod already uses for
// something else are refused, never overwritten.
func (i *Injector) mutation(ns string, pod *corev1.Pod) ([]byte, error) {
	service, err := serviceName(pod)
	if err != nil {
		return nil, err
	}
	port, err := appPort(pod)
	if err != nil {
		return nil, err
	}
	if hasContainer(pod, InitContainer) {
		return nil, fmt.Errorf("inject: the pod already has a container named %s", InitContainer)
	}
	vols := volumes()
	for _, v := range pod.Spec.Volumes {
		for _, ours := range vols {
			if v.Name == ours.Name {
				return nil, fmt.Errorf("inject: the pod already has a volume named %s", v.Name)
			}
		}
	}
	var ops []patchOp
	inits := []corev1.Container{i.iptablesContainer(), i.proxyContainer(ns, service, port)}
	if len(pod.Spec.InitContainers) == 0 {
		ops = append(ops, patchOp{"add", "/spec/initContainers", inits})
	} else {
		for n, c := range inits {
			ops = append(ops, patchOp{"add", fmt.Sprintf("/spec/initContainers/%d", n), c})
		}
	}
	if len(pod.Spec.Volumes) == 0 {
		ops = append(ops, patchOp{"add", "/spec/volumes", vols})
	} else {
		for _, v := range vols {
			ops = append(ops, patchOp{"add", "/spec/volumes/-", v})
		}
	}
	st := Status{Version: statusVersion, InitContainers: []string{InitContainer, ProxyContainer}, Image: i.cfg.image}
	for _, v := range vols {
		st.Volumes = append(st.Volumes, v.Name)
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("inject: status: %w", err)
	}
	if len(pod.Annotations) == 0 {
		ops = append(ops, patchOp{"add", "/metadata/annotations", map[string]string{AnnotationStatus: string(raw)}})
	} else {
		ops = append(ops, patchOp{"add", "/metadata/annotations/" + pointerEscape(AnnotationStatus), string(raw)})
	}
	out, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("inject: patch: %w", err)
	}
	return out, nil
}
