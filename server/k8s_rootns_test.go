package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/k8s/crdsource"

	"github.com/sigil-mesh/sigil/traffic"
)

// TestRootNamespaceFollowsK8sNamespace: Sigil's namespace on Kubernetes
// (--k8s-namespace) is the root namespace of mesh-wide Policies, as
// Istio's is its control plane's: the server streams it to every sidecar
// in its config snapshot. The agents' service account admitted by node
// attestation is in it too. Without Kubernetes the root stays
// sigil-system. sigil get policies marks the root's as mesh-wide
// (adminv1.Resource.MeshWide).
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
			for _, ns := range []string{"sigil-system", "mesh"} {
				doc := `{"apiVersion":"security.sigil.dev/v1","kind":"Policy","metadata":{"name":"root","namespace":"` + ns + `"},` +
					`"spec":{"modules":{"authz.rego":"package sigil.authz\n\nallow := true\n"}}}`
				obj := crdsource.Object{Group: traffic.GroupSigil, Kind: traffic.KindPolicy, Namespace: ns, Name: "root"}
				if err := (kubeConfigStore{s}).Apply(context.Background(), obj, []byte(doc)); err != nil {
					t.Fatal(err)
				}
			}
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.SetPathValue("kind", "policies")
			listed, err := s.listConfig(req)
			if err != nil {
				t.Fatal(err)
			}
			var meshWide []string
			for _, r := range listed.([]adminv1.Resource) {
				if r.MeshWide {
					meshWide = append(meshWide, r.Namespace)
				}
			}
			if want := fmt.Sprint([]string{tt.root}); fmt.Sprint(meshWide) != want {
				t.Errorf("policies listed as mesh-wide in %v, want %s", meshWide, want)
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
