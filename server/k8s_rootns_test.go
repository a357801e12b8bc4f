package server

import (
	"context"
	"fmt"
	"testing"

	"github.com/sigil-mesh/sigil/traffic"
)

// TestRootNamespaceFollowsK8sNamespace: Sigil's namespace on Kubernetes
// (--k8s-namespace) is the root namespace of mesh-wide Policies, as
// Istio's is its control plane's: the server streams it to every sidecar
// in its config snapshot. The agents' service account admitted by node
// attestation is in it too. Without Kubernetes the root stays
// sigil-system.
func TestRootNamespaceFollowsK8sNamespace(t *testing.T) {
	tests := []struct {
		name      string
		kube      KubeConfig
		root      string
		agentsSAs string
	}{
		{"plain host", KubeConfig{}, traffic.RootNamespace, "[]"},
		{"kubernetes, default namespace", KubeConfig{Enabled: true}, "sigil-system", "[sigil-system:sigil-agent]"},
		{"kubernetes, --k8s-namespace mesh", KubeConfig{Enabled: true, Namespace: "mesh"}, "mesh", "[mesh:sigil-agent]"},
		{"explicit allowed service accounts", KubeConfig{Enabled: true, Namespace: "mesh", PSATAllowedSAs: []string{"ops:agent"}}, "mesh", "[ops:agent]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := storeServer(t)
			if errs := tt.kube.check(); len(errs) > 0 {
				t.Fatal(errs)
			}
			s.cfg.Kubernetes = tt.kube
			snap, err := s.configSnapshot(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if snap.RootNamespace != tt.root || snap.Config().GetRootNamespace() != tt.root {
				t.Errorf("snapshot's root namespace %q, want %q", snap.RootNamespace, tt.root)
			}
			var sas []string
			for _, sa := range s.cfg.Kubernetes.psatAllowed {
				sas = append(sas, sa.String())
			}
			if got := fmt.Sprint(sas); got != tt.agentsSAs {
				t.Errorf("service accounts attesting nodes %s, want %s", got, tt.agentsSAs)
			}
		})
	}
}
