// Package kube connects Sigil's daemons and CLI to a Kubernetes API server
// through client-go: the REST config from a kubeconfig file or, inside a
// pod, from the service account client-go's in-cluster config reads, and
// the typed and dynamic clients built on it. It holds no Sigil logic; the
// parts that watch or write Kubernetes objects live beside what they feed
// (server/k8s*.go, agent/k8sattest, …) and take a *Clients.
package kube

import (
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// DefaultNamespace is the namespace Sigil's own objects (the server's
// Deployment, leases, the CA Secret, mesh-wide Policies) live in.
const DefaultNamespace = "sigil-system"

// Clients are the API server connections a Sigil daemon uses.
type Clients struct {
	// Config is the REST config the clients were built from, for clients
	// a part builds itself (leader election, informers of other groups).
	Config *rest.Config
	// Core is the typed clientset (core, discovery, authentication,
	// coordination, admissionregistration, …).
	Core kubernetes.Interface
	// Dynamic reads and writes custom resources (Istio's, Gateway API's,
	// Sigil's) without generated clients.
	Dynamic dynamic.Interface
}

// Options say how to reach the API server.
type Options struct {
	// Kubeconfig is a kubeconfig file's path; "" means in-cluster (the
	// pod's service account token and KUBERNETES_SERVICE_HOST).
	Kubeconfig string
	// UserAgent names the daemon in the API server's audit log, such as
	// "sigil-server".
	UserAgent string
	// Timeout bounds each request; 0 means 30 s.
	Timeout time.Duration
}

// ErrNotInCluster is the error of Connect with no kubeconfig outside a pod.
var ErrNotInCluster = errors.New("kube: no --kubeconfig given and not running in a pod (KUBERNETES_SERVICE_HOST is unset)")

// RESTConfig returns the REST config o describes.
func RESTConfig(o Options) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if o.Kubeconfig != "" {
		if _, statErr := os.Stat(o.Kubeconfig); statErr != nil {
			return nil, fmt.Errorf("kube: --kubeconfig: %w", statErr)
		}
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kube: --kubeconfig %s: %w", o.Kubeconfig, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, ErrNotInCluster
		}
		if err != nil {
			return nil, fmt.Errorf("kube: in-cluster config: %w", err)
		}
	}
	cfg.UserAgent = o.UserAgent
	cfg.Timeout = o.Timeout
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	return cfg, nil
}

// Connect builds the clients for o. It does not contact the API server.
func Connect(o Options) (*Clients, error) {
	cfg, err := RESTConfig(o)
	if err != nil {
		return nil, err
	}
	return ForConfig(cfg)
}

// ForConfig builds the clients on cfg, for a caller that found its REST
// config another way (the CLI reads kubectl's). It does not contact the
// API server.
func ForConfig(cfg *rest.Config) (*Clients, error) {
	core, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: clientset: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: dynamic client: %w", err)
	}
	return &Clients{Config: cfg, Core: core, Dynamic: dyn}, nil
}
