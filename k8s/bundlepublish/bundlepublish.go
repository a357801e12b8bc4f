// Package bundlepublish keeps the server's trust bundle in a ConfigMap, as
// SPIRE's k8sbundle notifier does: agents on Kubernetes mount it
// (sigil-agent --trust-bundle) to trust the server on first contact, and
// anything else in the cluster that verifies SVIDs may read it. The bundle
// is public (root certificates only); what may change it is the server's
// RBAC, which grants get and update on this one ConfigMap.
package bundlepublish

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Defaults of Publisher, as deploy/kubernetes names them.
const (
	DefaultName     = "sigil-bundle"
	DefaultKey      = "bundle.pem"
	DefaultInterval = 30 * time.Second
)

// Publisher writes a bundle to a ConfigMap.
type Publisher struct {
	Client kubernetes.Interface
	// Namespace and Name locate the ConfigMap (Name "" is DefaultName).
	Namespace, Name string
	// Key is the data key holding the PEM roots ("" is DefaultKey).
	Key string
	// Bundle returns the roots to publish, PEM; it is called at each
	// publication, so a rotation reaches the ConfigMap within Interval.
	Bundle func() []byte
	// Interval is how often Run compares and publishes (0 is
	// DefaultInterval).
	Interval time.Duration
	Log      *slog.Logger
}

func (p *Publisher) name() string {
	if p.Name == "" {
		return DefaultName
	}
	return p.Name
}

func (p *Publisher) key() string {
	if p.Key == "" {
		return DefaultKey
	}
	return p.Key
}

// Publish writes the bundle unless the ConfigMap holds it already, and
// reports whether it wrote. An empty bundle is an error: agents must never
// be handed nothing to trust.
func (p *Publisher) Publish(ctx context.Context) (bool, error) {
	pem := p.Bundle()
	if len(bytes.TrimSpace(pem)) == 0 {
		return false, fmt.Errorf("bundlepublish: the server's bundle is empty")
	}
	cms := p.Client.CoreV1().ConfigMaps(p.Namespace)
	cm, err := cms.Get(ctx, p.name(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: p.name(), Namespace: p.Namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "sigil"}},
			Data:       map[string]string{p.key(): string(pem)},
		}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return false, fmt.Errorf("bundlepublish: creating ConfigMap %s/%s: %w", p.Namespace, p.name(), err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("bundlepublish: reading ConfigMap %s/%s: %w", p.Namespace, p.name(), err)
	}
	if cm.Data[p.key()] == string(pem) {
		return false, nil
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[p.key()] = string(pem)
	// Update carries the resourceVersion read: two replicas publishing at
	// once conflict, and the loser compares again at the next interval.
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return false, fmt.Errorf("bundlepublish: updating ConfigMap %s/%s: %w", p.Namespace, p.name(), err)
	}
	return true, nil
}

// Run publishes every Interval until ctx is done, logging failures (the
// next interval retries).
func (p *Publisher) Run(ctx context.Context) {
	every := p.Interval
	if every == 0 {
		every = DefaultInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wrote, err := p.Publish(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			p.Log.Warn("trust bundle not published", "configmap", p.Namespace+"/"+p.name(), "error", err)
		case wrote:
			p.Log.Info("trust bundle published", "configmap", p.Namespace+"/"+p.name())
		}
	}
}
