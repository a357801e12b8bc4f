// Package k8sattest attests workloads on Kubernetes, as SPIRE's k8s
// workload attestor does: the caller's pid (from the socket, set by the
// kernel) leads to its cgroup (PROC-ROOT/<pid>/cgroup), the cgroup to its
// pod's UID and container ID (ParseCgroups), and the UID to the pod in an
// informer limited to the agent's node (Pods). The pod gives the k8s
// selectors: k8s:ns, k8s:sa, k8s:pod-name, k8s:pod-uid, one
// k8s:pod-label:KEY:VALUE per label and, when a container status carries
// the cgroup's container ID, k8s:container-name.
//
// Anything short of that gives no k8s selector at all, so entries that
// need one do not match (fail closed): a process outside a pod, a pod
// not bound to this node, a pod that has ended.
package k8sattest

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/selector"
	corev1 "k8s.io/api/core/v1"
)

// DefaultPodWait bounds how long an attestation waits for the informer to
// receive a pod its cgroup names (SPIRE polls its kubelet for up to 30 s):
// a pod's first call can race the watch event of its creation. A pod the
// node never gets (one on another node) costs the caller this long.
const DefaultPodWait = 10 * time.Second

// PodSource finds the node's pods by UID.
type PodSource interface {
	// Wait returns the pod with this UID bound to the node, waiting for it
	// until ctx ends.
	Wait(ctx context.Context, uid string) (*corev1.Pod, bool)
}

// Attestor makes the k8s selectors of a process.
type Attestor struct {
	procRoot string
	pods     PodSource
	wait     time.Duration
	log      *slog.Logger
}

// New returns an attestor that reads cgroups under procRoot (the host's
// /proc as the agent sees it) and finds pods in pods, waiting up to wait
// for a pod the informer has not received yet (0: DefaultPodWait).
func New(procRoot string, pods PodSource, wait time.Duration, log *slog.Logger) *Attestor {
	if wait == 0 {
		wait = DefaultPodWait
	}
	return &Attestor{procRoot: procRoot, pods: pods, wait: wait, log: log}
}

// Attest returns the k8s selectors of process pid, or none (see the
// package comment). It blocks until the pod is found, wait passes or ctx
// ends.
func (a *Attestor) Attest(ctx context.Context, pid int32) []selector.Selector {
	if pid <= 0 {
		return nil
	}
	f, err := os.Open(filepath.Join(a.procRoot, strconv.Itoa(int(pid)), "cgroup"))
	if err != nil {
		a.log.Debug("k8s attestation: no cgroup", "pid", pid, "error", err)
		return nil
	}
	c, err := ParseCgroups(f)
	f.Close()
	if err != nil {
		if !errors.Is(err, ErrNotInPod) {
			a.log.Warn("k8s attestation refused", "pid", pid, "error", err)
		}
		return nil
	}
	waitCtx, cancel := context.WithTimeout(ctx, a.wait)
	defer cancel()
	pod, ok := a.pods.Wait(waitCtx, c.PodUID)
	if !ok {
		a.log.Warn("k8s attestation: pod not bound to this node", "pid", pid, "pod_uid", c.PodUID)
		return nil
	}
	return Selectors(pod, c.ContainerID)
}

// Selectors returns the k8s selectors of pod for the process in container
// containerID; none for a pod that has ended (Succeeded or Failed).
func Selectors(pod *corev1.Pod, containerID string) []selector.Selector {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default" // what the ServiceAccount admission plugin sets
	}
	out := []selector.Selector{
		selector.K8s(selector.K8sNamespace, pod.Namespace),
		selector.K8s(selector.K8sServiceAccount, sa),
		selector.K8s(selector.K8sPodName, pod.Name),
		selector.K8s(selector.K8sPodUID, string(pod.UID)),
	}
	for k, v := range pod.Labels {
		out = append(out, selector.K8sLabel(k, v))
	}
	if name, ok := containerName(pod, containerID); ok {
		out = append(out, selector.K8s(selector.K8sContainerName, name))
	}
	return selector.Sort(out)
}

// containerName is the name of the pod's container (regular, init or
// ephemeral) whose status carries containerID, as
// "<runtime>://<containerID>".
func containerName(pod *corev1.Pod, containerID string) (string, bool) {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, st := range list {
			if _, id, ok := strings.Cut(st.ContainerID, "://"); ok && id == containerID {
				return st.Name, true
			}
		}
	}
	return "", false
}
