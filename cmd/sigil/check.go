package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/sigil-mesh/sigil/deploy"
	"github.com/sigil-mesh/sigil/k8s/installcheck"
	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
)

// errChecksFailed is check's error when a check failed: the list printed
// says which; the exit status is 1.
var errChecksFailed = errors.New("check: some checks failed (× above)")

// newCheck is `sigil check`: the pre- and post-install checks of a
// Kubernetes cluster (package k8s/installcheck), as `linkerd check` runs
// them.
func newCheck() *cobra.Command {
	var pre bool
	var kubeconfig, namespace string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check a Kubernetes cluster before (--pre) or after installing Sigil; exit status 1 when a check fails",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !naming.ValidNamespace(namespace) {
				return fmt.Errorf("check: --namespace %s: not a Kubernetes namespace name", naming.Quote(namespace))
			}
			clients, err := laptopClients(kubeconfig)
			if err != nil {
				return err
			}
			env := &installcheck.Env{Clients: clients, Namespace: namespace, Now: time.Now}
			if !installcheck.Run(cmd.Context(), cmd.OutOrStdout(), env, installcheck.Checks(installcheck.Options{Pre: pre})) {
				return errChecksFailed
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&pre, "pre", false, "run the pre-install checks: API server version, permissions to install, no earlier installation")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, with its current context)")
	f.StringVar(&namespace, "namespace", deploy.DefaultNamespace, "namespace Sigil is (or will be) installed in (sigil install --namespace)")
	return cmd
}

// laptopClients builds API server clients as kubectl finds its config:
// --kubeconfig, else $KUBECONFIG, else ~/.kube/config (the daemons' kube
// package reads the pod's in-cluster account instead).
func laptopClients(kubeconfig string) (*kube.Clients, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("check: kubeconfig: %w", err)
	}
	cfg.UserAgent = "sigil-check"
	cfg.Timeout = 15 * time.Second
	return kube.ForConfig(cfg)
}
