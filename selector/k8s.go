package selector

import (
	"fmt"
	"strings"
)

// TypeK8s is the type of the selectors the Kubernetes workload attestor
// makes (agent/k8sattest), SPIRE's k8s workload attestor's names:
// k8s:ns:NS, k8s:sa:SA, k8s:pod-name:NAME, k8s:pod-uid:UID,
// k8s:pod-label:KEY:VALUE, k8s:container-name:NAME.
const TypeK8s = "k8s"

// The keys of k8s selectors.
const (
	K8sNamespace      = "ns"
	K8sServiceAccount = "sa"
	K8sPodName        = "pod-name"
	K8sPodUID         = "pod-uid"
	K8sPodLabel       = "pod-label"
	K8sContainerName  = "container-name"
)

// K8s builds a k8s selector from a key and value made by the attestor.
func K8s(key, value string) Selector {
	return Selector{Type: TypeK8s, Value: key + ":" + value}
}

// K8sLabel builds the k8s:pod-label:KEY:VALUE selector.
func K8sLabel(key, value string) Selector {
	return K8s(K8sPodLabel, key+":"+value)
}

// checkK8s returns what is wrong with a k8s selector's value, or "".
func checkK8s(value string) (why string) {
	key, v, ok := strings.Cut(value, ":")
	if !ok || v == "" {
		return "k8s selectors are k8s:KEY:VALUE"
	}
	switch key {
	case K8sNamespace, K8sServiceAccount, K8sPodName, K8sPodUID, K8sContainerName:
		if strings.Contains(v, ":") {
			return key + " values hold no ':'"
		}
	case K8sPodLabel:
		if k, _, ok := strings.Cut(v, ":"); !ok || k == "" {
			return "pod-label selectors are k8s:pod-label:KEY:VALUE"
		}
	default:
		return fmt.Sprintf("unknown k8s key %q (want ns, sa, pod-name, pod-uid, pod-label or container-name)", key)
	}
	return ""
}
