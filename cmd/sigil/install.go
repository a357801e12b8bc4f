package main

import (
	"github.com/sigil-mesh/sigil/deploy"
	"github.com/spf13/cobra"
)

// newInstall is `sigil install`: print the manifests of a Kubernetes
// installation (deploy/kubernetes, package deploy) for
// `kubectl apply -f -`. It is offline: nothing here talks to a cluster.
func newInstall() *cobra.Command {
	var p deploy.Params
	cmd := &cobra.Command{
		Use:   "install --trust-domain TD",
		Short: "Print Sigil's Kubernetes manifests (CRDs, RBAC, server, agents, injection webhook) for kubectl apply -f -",
		Long: "Print Sigil's Kubernetes manifests for one trust domain, to pipe into `kubectl apply -f -`.\n" +
			"Check the cluster first with `sigil check --pre`, and the installation after with `sigil check` (docs/kubernetes.md).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := deploy.Render(p)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.TrustDomain, "trust-domain", "", "the mesh's SPIFFE trust domain, such as example.org (required; fixed at the server's first start)")
	f.StringVar(&p.Namespace, "namespace", deploy.DefaultNamespace, "namespace of Sigil's own objects (server, agents, leases, the CA Secret)")
	f.StringVar(&p.Cluster, "cluster", deploy.DefaultCluster, "this cluster's name in agent IDs: spiffe://TD/sigil/agent/k8s_psat/CLUSTER/NODE")
	f.StringVar(&p.Image, "image", deploy.DefaultImage, "container image with the four binaries (built by make image; not published: push it where the cluster pulls from)")
	f.BoolVar(&p.SkipIstioCRDs, "skip-istio-crds", false, "leave out Sigil's copies of Istio's VirtualService and DestinationRule CRDs, where Istio installed its own (sigil check --pre warns when it did)")
	return cmd
}
