package agent

// The agent on Kubernetes (--kubernetes): the node is attested with the
// projected service-account token kubelet mounts for the agent's pod
// (PSATTokenFile), and workloads are attested from their cgroup to their
// pod (package agent/k8sattest) through an informer limited to NodeName.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/sigil-mesh/sigil/agent/k8sattest"
	"github.com/sigil-mesh/sigil/agent/svid"
	"github.com/sigil-mesh/sigil/agent/unixattest"
	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// KubeConfig is how the agent works on Kubernetes.
type KubeConfig struct {
	// Enabled turns on Kubernetes node and workload attestation
	// (--kubernetes).
	Enabled bool
	// Kubeconfig is a kubeconfig file (--kubeconfig); "" means the pod's
	// in-cluster service account.
	Kubeconfig string
	// NodeName is the node the agent runs on (--node-name; the manifests
	// pass spec.nodeName through the downward API). Only pods bound to it
	// are attested.
	NodeName string
	// PSATTokenFile is the projected service-account token, audience
	// sigil-server, the agent attests with (--k8s-psat-token-file); it is
	// re-read at every attestation, as kubelet rotates it.
	PSATTokenFile string
	// ProcRoot is where the host's /proc is mounted in the agent's
	// container (--proc-root, default /proc): workloads' cgroups are read
	// from PROC-ROOT/<pid>/cgroup.
	ProcRoot string
}

// DefaultPSATTokenFile is --k8s-psat-token-file's default, the path the
// DaemonSet in deploy/ projects the token to.
const DefaultPSATTokenFile = "/var/run/secrets/tokens/sigil-agent"

func (k *KubeConfig) check(joinToken bool) []error {
	var errs []error
	if !k.Enabled {
		if k.Kubeconfig != "" || k.NodeName != "" {
			errs = append(errs, errors.New("--kubeconfig and --node-name need --kubernetes"))
		}
		return errs
	}
	if joinToken {
		errs = append(errs, errors.New("--kubernetes attests the node with its projected token: give no --join-token or --join-token-file"))
	}
	if err := naming.ValidateNodeName(k.NodeName); err != nil {
		errs = append(errs, fmt.Errorf("--node-name (required with --kubernetes): %w", err))
	}
	if k.PSATTokenFile == "" {
		k.PSATTokenFile = DefaultPSATTokenFile
	}
	if k.ProcRoot == "" {
		k.ProcRoot = "/proc"
	}
	return errs
}

// tokenSource is what the node attests with: with --kubernetes the
// projected service-account token, re-read at every attestation; else the
// join token of --join-token or --join-token-file.
func tokenSource(cfg Config) (svid.TokenSource, error) {
	if cfg.Kubernetes.Enabled {
		return svid.NewProjectedToken(cfg.Kubernetes.PSATTokenFile), nil
	}
	return svid.NewTokens(cfg.JoinToken, cfg.JoinTokenFile, os.Stdin)
}

// checkOwnID checks, with --kubernetes, that the agent ID the server
// issued is the k8s_psat ID of --node-name: the server takes the node from
// the agent pod's spec.nodeName, and an agent told another node would
// attest the workloads of a node it is not on. Without --kubernetes any
// agent ID passes.
func (k *KubeConfig) checkOwnID(id spiffeid.ID) error {
	if !k.Enabled {
		return nil
	}
	_, node, ok := naming.K8sPSATNode(id)
	if !ok {
		return fmt.Errorf("agent: agent ID %s is not a k8s_psat agent ID, and --kubernetes needs one (a data dir of a join-token agent?)", id)
	}
	if node != k.NodeName {
		return fmt.Errorf("agent: the server attested this agent as node %s (its pod's spec.nodeName), but --node-name is %s: pass spec.nodeName through the downward API", naming.Quote(node), naming.Quote(k.NodeName))
	}
	return nil
}

// podSyncTimeout bounds the first listing of the node's pods at start:
// an agent that cannot see its pods (API server away, RBAC missing) exits
// with the reason rather than serve identities it cannot attest.
const podSyncTimeout = time.Minute

// attestor is the agent's workload attestor: the unix selectors always,
// and with --kubernetes the k8s ones of the caller's pod too.
type attestor struct {
	unix *unixattest.Attestor
	k8s  *k8sattest.Attestor // nil without --kubernetes
	// sameProcess is unixattest.SameProcess; tests of callers without a
	// handshake replace it.
	sameProcess func(unixattest.AuthInfo) error
	log         *slog.Logger
}

// Attest implements workloadapi.Attestor and relay.Attestor.
// A caller whose pid no longer names the process that connected gets no
// selectors at all, so no identity (unixattest.SameProcess).
func (a attestor) Attest(ctx context.Context, info unixattest.AuthInfo) []selector.Selector {
	sels := a.unix.Attest(ctx, info)
	if a.k8s != nil {
		sels = selector.Sort(append(sels, a.k8s.Attest(ctx, info.PID)...))
	}
	if err := a.sameProcess(info); err != nil {
		a.log.Warn("workload attestation refused", "pid", info.PID, "error", err)
		return nil
	}
	return sels
}

// newAttestor returns the workload attestor; with --kubernetes it starts
// the informer of the node's pods and returns once it has listed them. The
// informer stops when ctx ends; done is closed then.
func (a *agent) newAttestor(ctx context.Context) (_ attestor, done <-chan struct{}, err error) {
	out := attestor{unix: &unixattest.Attestor{}, sameProcess: unixattest.SameProcess, log: a.log}
	k := a.cfg.Kubernetes
	if !k.Enabled {
		closed := make(chan struct{})
		close(closed)
		return out, closed, nil
	}
	clients, err := kube.Connect(kube.Options{Kubeconfig: k.Kubeconfig, UserAgent: "sigil-agent"})
	if err != nil {
		return out, nil, fmt.Errorf("agent: %w", err)
	}
	pods, err := k8sattest.NewPods(clients.Core, k.NodeName)
	if err != nil {
		return out, nil, err
	}
	done = pods.Start(ctx)
	syncCtx, cancel := context.WithTimeout(ctx, podSyncTimeout)
	defer cancel()
	if err := pods.Synced(syncCtx); err != nil {
		return out, done, fmt.Errorf("agent: %w", err)
	}
	out.k8s = k8sattest.New(k.ProcRoot, pods, 0, a.log)
	a.log.Info("kubernetes workload attestation on", "node", k.NodeName, "proc_root", k.ProcRoot)
	return out, done, nil
}
