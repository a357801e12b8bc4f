package inject

import (
	"fmt"
	"net"
	"path"
	"strconv"

	"github.com/sigil-mesh/sigil/naming"
	corev1 "k8s.io/api/core/v1"
)

// podIPEnv holds the Pod's IP (downward API) for the sidecar's --advertise.
const podIPEnv = "SIGIL_POD_IP"

// serviceName is the Pod's mesh service: the annotation sigil.dev/service,
// else the label app, else app.kubernetes.io/name (the labels Istio reads
// for its canonical service). A Pod with none, or with an invalid one, is
// refused: a sidecar with no service cannot start.
func serviceName(pod *corev1.Pod) (string, error) {
	for _, src := range []struct {
		what, key string
		m         map[string]string
	}{
		{"annotation", AnnotationService, pod.Annotations},
		{"label", "app", pod.Labels},
		{"label", "app.kubernetes.io/name", pod.Labels},
	} {
		v, ok := src.m[src.key]
		if !ok {
			continue
		}
		if !naming.ValidServiceName(v) {
			return "", fmt.Errorf("inject: %s %s: service name %s: only a-z, 0-9 and inner '-', at most 63 characters", src.what, src.key, naming.Quote(v))
		}
		return v, nil
	}
	return "", fmt.Errorf("inject: no service name: set the label app or app.kubernetes.io/name, or the annotation %s", AnnotationService)
}

// appPort is the port the sidecar forwards inbound requests to: the
// annotation sigil.dev/app-port, else the first TCP containerPort of the
// first container that declares one, else 0 (a Pod that serves nothing,
// such as a Job's: the sidecar still carries its outbound traffic, and
// refuses inbound requests as the app is unreachable).
func appPort(pod *corev1.Pod) (int, error) {
	if v, ok := pod.Annotations[AnnotationAppPort]; ok {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return 0, fmt.Errorf("inject: annotation %s: %s is not a port (1 to 65535)", AnnotationAppPort, naming.Quote(v))
		}
		if p == InboundPort || p == OutboundPort || p == proxyAdminPort {
			return 0, fmt.Errorf("inject: annotation %s: port %d is the sidecar's own", AnnotationAppPort, p)
		}
		return p, nil
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
				return int(p.ContainerPort), nil
			}
		}
	}
	return 0, nil
}

// proxyAdminPort is sigil-proxy's default admin port (127.0.0.1 only),
// where `sigil-proxy ready` asks for /ready.
const proxyAdminPort = 15000

// iptablesContainer is the redirect step, as Istio's istio-init: root,
// with NET_ADMIN and NET_RAW only, no privilege escalation.
func (i *Injector) iptablesContainer() corev1.Container {
	root, no, yes := int64(0), false, true
	return corev1.Container{
		Name:    InitContainer,
		Image:   i.cfg.image,
		Command: []string{"sigil-proxy"},
		Args:    []string{"iptables", "--proxy-uid", strconv.Itoa(ProxyUID), "--outbound-port", strconv.Itoa(OutboundPort)},
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: i.cfg.cpu, corev1.ResourceMemory: i.cfg.mem,
		}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: &root, RunAsGroup: &root, RunAsNonRoot: &no,
			Privileged: &no, AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// proxyContainer is the sidecar, as a native sidecar (restartPolicy
// Always) whose startup probe gates the containers after it.
func (i *Injector) proxyContainer(ns, service string, port int) corev1.Container {
	uid, no, yes := int64(ProxyUID), false, true
	always := corev1.ContainerRestartPolicyAlways
	return corev1.Container{
		Name:    ProxyContainer,
		Image:   i.cfg.image,
		Command: []string{"sigil-proxy"},
		Args: []string{"run",
			"--socket", path.Join(AgentSocketDir, "agent.sock"),
			"--service", service,
			"--namespace", ns,
			"--app", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			"--inbound", net.JoinHostPort("0.0.0.0", strconv.Itoa(InboundPort)),
			// Kubernetes expands $(VAR) from the container's env.
			"--advertise", "$(" + podIPEnv + "):" + strconv.Itoa(InboundPort),
			"--transparent",
		},
		Env: []corev1.EnvVar{{Name: podIPEnv, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			// The decision-export spool lives under TMPDIR.
			{Name: "TMPDIR", Value: "/tmp"}},
		Ports: []corev1.ContainerPort{{Name: "sigil-inbound", ContainerPort: InboundPort, Protocol: corev1.ProtocolTCP}},
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: i.cfg.cpu, corev1.ResourceMemory: i.cfg.mem,
		}},
		RestartPolicy: &always,
		// Istio's startup probe shape: every second for up to ten minutes.
		// An exec probe, because the admin endpoint (with /config and
		// pprof) listens on the Pod's loopback only, which an HTTP probe
		// from the kubelet cannot reach.
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sigil-proxy", "ready"}}},
			PeriodSeconds:    1,
			TimeoutSeconds:   3,
			FailureThreshold: 600,
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: SocketVolume, MountPath: AgentSocketDir, ReadOnly: true},
			{Name: TmpVolume, MountPath: "/tmp"},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: &uid, RunAsGroup: &uid, RunAsNonRoot: &yes,
			Privileged: &no, AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// volumes are the agent's socket directory from the node and a scratch
// directory for the sidecar (its root filesystem is read-only).
func volumes() []corev1.Volume {
	dir := corev1.HostPathDirectory
	return []corev1.Volume{
		{Name: SocketVolume, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: AgentSocketDir, Type: &dir}}},
		{Name: TmpVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
}
