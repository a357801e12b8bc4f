package server

// The sidecar injection webhook (package k8s/inject): a mutating
// admission webhook on --webhook-bind, over TLS with a serving certificate
// from Sigil's own CA renewed at half-life, whose CA bundle the server
// keeps in the MutatingWebhookConfiguration --webhook-config-name.

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/k8s/inject"
	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/listener"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
)

// InjectConfig is the sidecar injection webhook's part of KubeConfig.
type InjectConfig struct {
	// Bind is HOST:PORT of the webhook (--webhook-bind); "" serves none.
	Bind string
	// ConfigName is the MutatingWebhookConfiguration whose caBundle the
	// server keeps (--webhook-config-name).
	ConfigName string
	// TLSSANs are further DNS names or IPs of the serving certificate
	// (--webhook-tls-san), beside sigil-server.NS.svc[.cluster.local].
	TLSSANs []string
	// ProxyImage, ProxyCPU and ProxyMemory are the injected sidecar's
	// image and resource requests (--inject-proxy-image,
	// --inject-proxy-cpu, --inject-proxy-memory).
	ProxyImage, ProxyCPU, ProxyMemory string
}

// informerSyncTimeout bounds the wait for the namespaces informer's
// first list at start.
const informerSyncTimeout = 30 * time.Second

// DefaultWebhookBind is --webhook-bind's default.
const DefaultWebhookBind = ":8443"

func (w *InjectConfig) check(ns string) []error {
	if w.Bind == "" {
		return nil
	}
	var errs []error
	if _, _, err := net.SplitHostPort(w.Bind); err != nil {
		errs = append(errs, fmt.Errorf("--webhook-bind %s: %w", naming.Quote(w.Bind), err))
	}
	if w.ConfigName == "" {
		w.ConfigName = inject.DefaultWebhookConfig
	}
	if !naming.ValidName(w.ConfigName) {
		errs = append(errs, fmt.Errorf("--webhook-config-name %s: not a Kubernetes object name", naming.Quote(w.ConfigName)))
	}
	for _, h := range w.TLSSANs {
		if net.ParseIP(h) == nil && !naming.ValidName(h) {
			errs = append(errs, fmt.Errorf("--webhook-tls-san %s: neither an IP address nor a DNS name", naming.Quote(h)))
		}
	}
	if n := len(inject.ServingHosts(ns, w.TLSSANs)); n > ca.MaxServingNames {
		errs = append(errs, fmt.Errorf("--webhook-tls-san: %d names, at most %d", len(w.TLSSANs), ca.MaxServingNames-2))
	}
	return errs
}

// checkOff refuses the webhook's flags, set to other than their defaults,
// on a server without --kubernetes (no flag is accepted and ignored).
func (w *InjectConfig) checkOff() []error {
	var errs []error
	for _, f := range []struct{ flag, v, def string }{
		{"--webhook-bind", w.Bind, DefaultWebhookBind},
		{"--webhook-config-name", w.ConfigName, inject.DefaultWebhookConfig},
		{"--inject-proxy-image", w.ProxyImage, inject.DefaultImage},
		{"--inject-proxy-cpu", w.ProxyCPU, inject.DefaultCPURequest},
		{"--inject-proxy-memory", w.ProxyMemory, inject.DefaultMemoryRequest},
	} {
		if f.v != "" && f.v != f.def {
			errs = append(errs, fmt.Errorf("%s needs --kubernetes", f.flag))
		}
	}
	if len(w.TLSSANs) > 0 {
		errs = append(errs, errors.New("--webhook-tls-san needs --kubernetes"))
	}
	return errs
}

// webhookPart is the injection webhook's entry in kubeParts.
func (s *Server) webhookPart() kubePart {
	return kubePart{name: "webhook", start: s.startWebhook}
}

func (s *Server) startWebhook(ctx context.Context, wg *sync.WaitGroup) error {
	w, ns := s.cfg.Kubernetes.Inject, s.cfg.Kubernetes.Namespace
	if w.Bind == "" {
		return nil
	}
	log := s.log.With("part", "webhook")
	// The namespaces' informer is the shared factory's (k8s.go).
	nsInformer := s.kubeInformers.Core().V1().Namespaces()
	labels := namespaceLabels{lister: nsInformer.Lister(), core: s.kube.Core}
	nsInformer.Informer()
	s.kubeInformers.Start(ctx.Done())
	// A list the API server forbids is retried forever by the informer:
	// bound the wait so a missing RBAC rule stops the server, named.
	if err := kube.WaitSyncedWithin(ctx, informerSyncTimeout, nsInformer.Informer(), "namespaces"); err != nil {
		return fmt.Errorf("server: webhook: %w", err)
	}

	inj, err := inject.New(inject.Config{Image: w.ProxyImage, CPURequest: w.ProxyCPU, MemoryRequest: w.ProxyMemory, MeshNamespace: ns}, labels, log)
	if err != nil {
		return err
	}
	if err := s.metrics.reg.Register(inj.Collector()); err != nil {
		return fmt.Errorf("server: webhook metrics: %w", err)
	}
	id, hosts := naming.ServerID(s.cfg.td), inject.ServingHosts(ns, w.TLSSANs)
	cert, err := inject.NewServingCert(func(pub crypto.PublicKey) ([]*x509.Certificate, error) {
		return s.ca.SignServingCert(pub, id, hosts, s.cfg.DefaultX509TTL)
	}, s.now)
	if err != nil {
		return err
	}
	patcher := inject.NewBundlePatcher(s.kube.Core.AdmissionregistrationV1().MutatingWebhookConfigurations(), w.ConfigName, ns, s.now)
	s.syncWebhookBundle(ctx, patcher, log)

	lis, err := net.Listen("tcp", w.Bind)
	if err != nil {
		return fmt.Errorf("server: --webhook-bind %s: %w", w.Bind, err)
	}
	mux := http.NewServeMux()
	mux.Handle(inject.Path, inj)
	srv := &http.Server{
		Handler:   mux,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: cert.GetCertificate},
		// The API server's webhook timeout is 30 s at most.
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	log.Info("sidecar injection webhook serving", "webhook", lis.Addr().String(), "path", inject.Path, "webhook_config", w.ConfigName, "not_after", cert.Leaf().NotAfter)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.ServeTLS(listener.Retrying(lis, "webhook", log), "", ""); !errors.Is(err, http.ErrServerClosed) {
			log.Error("webhook stopped", "error", err)
		}
	}()
	go func() {
		defer wg.Done()
		t := time.NewTicker(rotateEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
				return
			case <-t.C:
			}
			if renewed, err := cert.RenewIfDue(); err != nil {
				log.Error("webhook serving certificate renewal failed; will retry", "error", err)
			} else if renewed {
				log.Info("webhook serving certificate renewed", "not_after", cert.Leaf().NotAfter)
			}
			s.syncWebhookBundle(ctx, patcher, log)
		}
	}()
	return nil
}

// syncWebhookBundle writes the trust bundle into the webhook
// configuration when it changed (or was wiped). A failure is logged and
// retried on the next tick: the configuration may not be applied yet.
func (s *Server) syncWebhookBundle(ctx context.Context, p *inject.BundlePatcher, log *slog.Logger) {
	patched, err := p.Sync(ctx, bundlePEM(s.ca.Bundle()))
	switch {
	case err != nil:
		log.Warn("webhook configuration's ca bundle not updated; will retry", "error", err)
	case patched:
		log.Info("webhook configuration's ca bundle updated")
	}
}

// bundlePEM is a trust bundle's X.509 roots, PEM.
func bundlePEM(b *spiffebundle.Bundle) []byte {
	var out []byte
	for _, c := range b.X509Authorities() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// namespaceLabels reads namespaces' labels from the informer's cache,
// asking the API server for one the cache does not hold yet (created an
// instant before its first Pod).
type namespaceLabels struct {
	lister corev1listers.NamespaceLister
	core   kubernetes.Interface
}

func (n namespaceLabels) NamespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	ns, err := n.lister.Get(name)
	if apierrors.IsNotFound(err) {
		ns, err = n.core.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, err
	}
	return ns.Labels, nil
}
