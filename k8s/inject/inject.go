// Package inject is Sigil's sidecar injector: the mutation a Kubernetes
// mutating admission webhook (served by sigil-server) applies to a Pod
// that opts in to the mesh, and the serving certificate and CA bundle that
// let the API server call it.
//
// A Pod is injected when its namespace or the Pod itself carries the label
// sigil.dev/inject=enabled, unless the Pod's annotation sigil.dev/inject is
// "false", it runs in the host's network namespace, or it lives in a
// namespace that is never injected (kube-system, kube-public,
// kube-node-lease and the mesh's own). An injected Pod gets, in front of
// its own init containers:
//
//   - sigil-iptables, the redirect step Istio's istio-init performs: it
//     runs `sigil-proxy iptables` as root with NET_ADMIN and NET_RAW only,
//     sending the Pod's outbound TCP to the sidecar, except the sidecar's
//     own (uid ProxyUID) and loopback;
//   - sigil-proxy, the sidecar as a Kubernetes native sidecar (an init
//     container with restartPolicy Always, KEP-753): its startup probe
//     (`sigil-proxy ready`, the admin endpoint's /ready) must pass before
//     the next container starts, so the app starts only once the sidecar
//     has its SVID and policy, and a Job's Pod completes when its app
//     exits;
//
// the agent's Workload API socket directory from the node (hostPath), and
// the annotation sigil.dev/status naming what was added (as Istio's
// sidecar.istio.io/status). A Pod that already has a sigil-proxy container
// is returned unchanged, so re-admission (reinvocationPolicy IfNeeded, or
// a Pod created from an injected Pod's spec) adds nothing.
//
// Typical use:
//
//	inj, err := inject.New(inject.Config{Image: img, MeshNamespace: "sigil-system"}, namespaces, log)
//	mux.Handle(inject.Path, inj)
package inject

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-mesh/sigil/naming"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Names of the labels and annotations the injector reads and writes, under
// Sigil's prefix (as Istio's sidecar.istio.io/...).
const (
	// LabelInject on a namespace or a Pod, with value LabelInjectEnabled,
	// opts the Pod in.
	LabelInject        = "sigil.dev/inject"
	LabelInjectEnabled = "enabled"
	// AnnotationInject on a Pod, "false", opts it out ("true" or absent
	// leaves the decision to the labels; any other value is refused).
	AnnotationInject = "sigil.dev/inject"
	// AnnotationService names the Pod's mesh service, over the labels
	// app and app.kubernetes.io/name.
	AnnotationService = "sigil.dev/service"
	// AnnotationAppPort is the app's port the sidecar forwards inbound
	// requests to, over the first TCP containerPort of the first
	// container.
	AnnotationAppPort = "sigil.dev/app-port"
	// AnnotationStatus records what was injected (JSON, see Status).
	AnnotationStatus = "sigil.dev/status"
)

// Names of what the injector adds to a Pod.
const (
	ProxyContainer = "sigil-proxy"
	InitContainer  = "sigil-iptables"
	SocketVolume   = "sigil-agent-socket"
	TmpVolume      = "sigil-proxy-tmp"
)

// Fixed settings of the injected sidecar.
const (
	// ProxyUID is the uid (and gid) the sidecar runs as, whose
	// connections the iptables step leaves alone: 1337, as Istio's.
	ProxyUID = 1337
	// AgentSocketDir is the node directory of the agent's Workload API
	// socket (the agent DaemonSet's hostPath), mounted at the same path.
	AgentSocketDir = "/run/sigil"
	// InboundPort and OutboundPort are the sidecar's listeners (DESIGN.md).
	InboundPort  = 15006
	OutboundPort = 15001
)

// DefaultImage is the image --inject-proxy-image names by default: the one
// deploy/Dockerfile builds, tagged as the install manifests expect. No
// registry publishes it; build and push it (docs/kubernetes.md).
const DefaultImage = "ghcr.io/sigil-mesh/sigil:latest"

// Defaults of the sidecar's resource requests.
const (
	DefaultCPURequest    = "100m"
	DefaultMemoryRequest = "128Mi"
)

// Config is what the injector adds and where it never does.
type Config struct {
	// Image holds sigil-proxy (and iptables) at /usr/local/bin
	// (--inject-proxy-image); "" is DefaultImage.
	Image string
	// CPURequest and MemoryRequest are the sidecar's resource requests in
	// Kubernetes quantity syntax (--inject-proxy-cpu,
	// --inject-proxy-memory); "" is the default.
	CPURequest, MemoryRequest string
	// MeshNamespace is where Sigil itself runs; its Pods are never
	// injected (the injector must not depend on itself).
	MeshNamespace string
}

// neverInjected are the namespaces of the cluster's own components, as
// Istio leaves kube-system alone.
var neverInjected = []string{"kube-system", "kube-public", "kube-node-lease"}

// checked is a Config with defaults filled in and quantities parsed.
type checked struct {
	image    string
	cpu, mem resource.Quantity
	skip     []string
}

func (c Config) check() (checked, error) {
	var errs []error
	out := checked{image: c.Image, skip: slices.Clone(neverInjected)}
	if out.image == "" {
		out.image = DefaultImage
	}
	cpu, mem := c.CPURequest, c.MemoryRequest
	if cpu == "" {
		cpu = DefaultCPURequest
	}
	if mem == "" {
		mem = DefaultMemoryRequest
	}
	var err error
	if out.cpu, err = resource.ParseQuantity(cpu); err != nil || out.cpu.Sign() <= 0 {
		errs = append(errs, fmt.Errorf("inject: --inject-proxy-cpu %s: want a positive Kubernetes quantity such as 100m", naming.Quote(cpu)))
	}
	if out.mem, err = resource.ParseQuantity(mem); err != nil || out.mem.Sign() <= 0 {
		errs = append(errs, fmt.Errorf("inject: --inject-proxy-memory %s: want a positive Kubernetes quantity such as 128Mi", naming.Quote(mem)))
	}
	if !naming.ValidNamespace(c.MeshNamespace) {
		errs = append(errs, fmt.Errorf("inject: mesh namespace %s: not a namespace name", naming.Quote(c.MeshNamespace)))
	}
	out.skip = append(out.skip, c.MeshNamespace)
	return out, errors.Join(errs...)
}

// Injector decides and builds the mutation of each Pod; it is the
// webhook's http.Handler (ServeHTTP, in review.go).
type Injector struct {
	cfg        checked
	namespaces NamespaceLabels
	log        *slog.Logger
	results    *prometheus.CounterVec // by result: injected, skipped, refused
}

// New checks cfg and returns an Injector that reads namespace labels
// through namespaces.
func New(cfg Config, namespaces NamespaceLabels, log *slog.Logger) (*Injector, error) {
	c, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if namespaces == nil {
		return nil, errors.New("inject: no namespace lookup")
	}
	results := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sigil_server_sidecar_injections_total",
		Help: "Pod admissions the sidecar injector answered, by result: injected, skipped (not opted in, opted out, already injected...), refused (a malformed request or a Pod it cannot inject)."}, []string{"result"})
	for _, r := range []string{resultInjected, resultSkipped, resultRefused} {
		results.WithLabelValues(r)
	}
	return &Injector{cfg: c, namespaces: namespaces, log: log, results: results}, nil
}

// Results of an admission, the values of the result label.
const (
	resultInjected = "injected"
	resultSkipped  = "skipped"
	resultRefused  = "refused"
)

// Collector is the injector's Prometheus series,
// sigil_server_sidecar_injections_total, for the server's registry.
func (i *Injector) Collector() prometheus.Collector { return i.results }
