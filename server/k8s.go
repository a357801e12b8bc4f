package server

// The server on Kubernetes. With --kubernetes the server connects to the
// API server (package kube) and starts its Kubernetes parts, each in a
// file of its own (k8s_*.go) and listed in kubeParts: node attestation by
// projected service-account token, automatic workload identity, discovery
// from Services and EndpointSlices, configuration from CRDs, the sidecar
// injection webhook, leader election. Without it none of them runs and
// the server is the plain-host server.

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sigil-mesh/sigil/k8s/psat"
	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
)

// KubeConfig is how the server works against Kubernetes.
type KubeConfig struct {
	// Enabled turns the Kubernetes parts on (--kubernetes).
	Enabled bool
	// Kubeconfig is a kubeconfig file (--kubeconfig); "" means the pod's
	// in-cluster service account.
	Kubeconfig string
	// Cluster names the cluster in agent IDs,
	// spiffe://<td>/sigil/agent/k8s_psat/<cluster>/<node> (--k8s-cluster,
	// SPIRE's cluster name of its k8s_psat attestor).
	Cluster string
	// Namespace is where Sigil's own objects live (--k8s-namespace,
	// default kube.DefaultNamespace).
	Namespace string
	// Leader is how replicas elect the one that signs (k8s_leader.go).
	Leader LeaderConfig
	// PSATAllowedSAs are the service accounts, NAMESPACE:NAME, whose
	// projected tokens attest nodes (--k8s-psat-allowed-sa, repeatable;
	// SPIRE's service_account_allow_list); none means
	// <Namespace>:sigil-agent (sigil-system:sigil-agent by default).
	PSATAllowedSAs []string
	psatAllowed    []psat.ServiceAccount // PSATAllowedSAs parsed (checkPSAT)
	// DisableAutoIdentity turns off automatic identity, which gives every
	// pod bound to a node spiffe://<td>/ns/<ns>/sa/<sa> from that node's
	// k8s_psat agent with no entry (--k8s-auto-identity=false; on by
	// default; server/k8s_pods.go).
	DisableAutoIdentity bool
	// Inject is the sidecar injection webhook (k8s_webhook.go).
	Inject InjectConfig
}

// rootNamespace is the namespace whose Policies are mesh-wide, streamed
// to every sidecar: on Kubernetes Sigil's own, --k8s-namespace (as
// Istio's root namespace is its control plane's), else
// traffic.RootNamespace.
func (c *Config) rootNamespace() string {
	if c.Kubernetes.Enabled {
		return c.Kubernetes.Namespace
	}
	return traffic.RootNamespace
}

// DefaultK8sCluster is --k8s-cluster's default.
const DefaultK8sCluster = "cluster"

func (k *KubeConfig) check() []error {
	var errs []error
	if !k.Enabled {
		if k.Kubeconfig != "" {
			errs = append(errs, errors.New("--kubeconfig needs --kubernetes"))
		}
		if len(k.PSATAllowedSAs) > 0 {
			errs = append(errs, errors.New("--k8s-psat-allowed-sa needs --kubernetes"))
		}
		if k.DisableAutoIdentity {
			errs = append(errs, errors.New("--k8s-auto-identity=false needs --kubernetes"))
		}
		errs = append(errs, k.Inject.checkOff()...)
		return errs
	}
	if k.Cluster == "" {
		k.Cluster = DefaultK8sCluster
	}
	if err := naming.ValidateNodeName(k.Cluster); err != nil {
		errs = append(errs, fmt.Errorf("--k8s-cluster %s: %w", naming.Quote(k.Cluster), err))
	}
	if k.Namespace == "" {
		k.Namespace = kube.DefaultNamespace
	}
	if !naming.ValidName(k.Namespace) {
		errs = append(errs, fmt.Errorf("--k8s-namespace %s: not a Kubernetes namespace name", naming.Quote(k.Namespace)))
	}
	errs = append(errs, k.checkPSAT()...)
	errs = append(errs, k.Inject.check(k.Namespace)...)
	return errs
}

// kubePart is one Kubernetes part of the server. start returns once the
// part is ready to answer (its informers synced) or failed; the part's
// goroutines run until ctx is done and are counted in wg.
type kubePart struct {
	name  string
	start func(ctx context.Context, wg *sync.WaitGroup) error
}

// kubeParts lists the server's Kubernetes parts in start order.
func (s *Server) kubeParts() []kubePart {
	return []kubePart{
		s.evictionsPart(),
		{name: "leader", start: s.startLeader},
		{name: "trust bundle", start: s.startBundlePublisher},
		s.servicesPart(),
		s.psatPart(),
		s.podsPart(),
		s.kubeConfigPart(),
		s.webhookPart(),
	}
}

// startKube connects to the API server and starts every part; the first
// part that fails stops the server (fail closed: a server told to run on
// Kubernetes does not serve half of it).
func (s *Server) startKube(ctx context.Context, wg *sync.WaitGroup) error {
	k := s.cfg.Kubernetes
	if !k.Enabled {
		return nil
	}
	if s.kube == nil { // connected already for the CA's Secret (k8s_leader.go)
		clients, err := kube.Connect(kube.Options{Kubeconfig: k.Kubeconfig, UserAgent: "sigil-server"})
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		s.kube = clients
	}
	s.startInformers(ctx, wg)
	for _, p := range s.kubeParts() {
		if err := p.start(ctx, wg); err != nil {
			return fmt.Errorf("server: kubernetes %s: %w", p.name, err)
		}
		s.log.Info("kubernetes part started", "part", p.name)
	}
	return nil
}

// startInformers makes the informer factory the parts share; each part
// asks it for its informers and starts it (starting only those not yet
// running). The factory is shut down, its informers waited for, once ctx
// is done.
func (s *Server) startInformers(ctx context.Context, wg *sync.WaitGroup) {
	s.kubeInformers = kube.NewInformers(s.kube.Core)
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		s.kubeInformers.Shutdown()
	}()
}
