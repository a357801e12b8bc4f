package server

// The trust bundle on Kubernetes: the server publishes its roots in the
// ConfigMap sigil-bundle of its namespace (package k8s/bundlepublish),
// which the agents' DaemonSet mounts as --trust-bundle.

import (
	"context"
	"encoding/pem"
	"sync"

	"github.com/sigil-mesh/sigil/k8s/bundlepublish"
)

// publishedBundle is the bundle's X.509 roots, PEM, as `sigil-server
// bundle show` prints them.
func (s *Server) publishedBundle() []byte {
	var out []byte
	for _, c := range s.ca.Bundle().X509Authorities() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// startBundlePublisher publishes the bundle once, so agents can start,
// then keeps the ConfigMap up to date through rotations.
func (s *Server) startBundlePublisher(ctx context.Context, wg *sync.WaitGroup) error {
	p := &bundlepublish.Publisher{Client: s.kube.Core, Namespace: s.cfg.Kubernetes.Namespace, Bundle: s.publishedBundle, Log: s.log}
	if _, err := p.Publish(ctx); err != nil {
		return err
	}
	wg.Add(1)
	go func() { defer wg.Done(); p.Run(ctx) }()
	return nil
}
