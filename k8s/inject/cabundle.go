package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// DefaultWebhookConfig is the MutatingWebhookConfiguration whose CA bundle
// the server keeps (--webhook-config-name).
const DefaultWebhookConfig = "sigil-sidecar-injector"

// RecheckEvery is how often the bundle in the webhook configuration is
// read again although Sigil's did not change, to restore it after
// something (a kubectl apply of the manifest without it) wiped it.
const RecheckEvery = time.Minute

// WebhookConfigs reads and patches MutatingWebhookConfigurations by name
// (client-go's typed client; RBAC get and patch on the one name).
type WebhookConfigs interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*admissionregv1.MutatingWebhookConfiguration, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*admissionregv1.MutatingWebhookConfiguration, error)
}

// BundlePatcher writes Sigil's trust bundle into the caBundle of the
// webhooks of one MutatingWebhookConfiguration that call this server:
// those whose clientConfig names the Service ServiceName in the mesh's
// namespace, or a URL. Other webhooks of it are left alone. It is not
// safe for concurrent use; one loop owns it.
type BundlePatcher struct {
	configs   WebhookConfigs
	name      string
	namespace string
	now       func() time.Time

	written []byte    // bundle last found in place or written
	checked time.Time // when
}

// NewBundlePatcher patches the configuration name; namespace is where the
// server's Service lives.
func NewBundlePatcher(configs WebhookConfigs, name, namespace string, now func() time.Time) *BundlePatcher {
	return &BundlePatcher{configs: configs, name: name, namespace: namespace, now: now}
}

// Sync makes the configuration's webhooks trust bundle (PEM roots). It
// reads the configuration only when bundle differs from the last one it
// saw in place or RecheckEvery has passed, and patches only webhooks whose
// caBundle differs. It reports whether it patched. An error (the
// configuration missing, no webhook of it calling this server, a
// conflicting change) leaves the next call to try again.
func (p *BundlePatcher) Sync(ctx context.Context, bundle []byte) (bool, error) {
	if len(bundle) == 0 {
		return false, errors.New("inject: empty trust bundle")
	}
	now := p.now()
	if bytes.Equal(bundle, p.written) && now.Sub(p.checked) < RecheckEvery {
		return false, nil
	}
	cfg, err := p.configs.Get(ctx, p.name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("inject: webhook configuration %s: %w", p.name, err)
	}
	var ops []patchOp
	calls := 0
	for n, wh := range cfg.Webhooks {
		cc := wh.ClientConfig
		if cc.URL == nil && (cc.Service == nil || cc.Service.Name != ServiceName || cc.Service.Namespace != p.namespace) {
			continue
		}
		calls++
		if bytes.Equal(cc.CABundle, bundle) {
			continue
		}
		// The test pins the index to the webhook read, should the list
		// change between Get and Patch.
		ops = append(ops,
			patchOp{"test", fmt.Sprintf("/webhooks/%d/name", n), wh.Name},
			patchOp{"add", fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", n), bundle})
	}
	if calls == 0 {
		return false, fmt.Errorf("inject: webhook configuration %s: no webhook calls service %s/%s or a URL", p.name, p.namespace, ServiceName)
	}
	if len(ops) > 0 {
		raw, err := json.Marshal(ops)
		if err != nil {
			return false, fmt.Errorf("inject: ca bundle patch: %w", err)
		}
		if _, err := p.configs.Patch(ctx, p.name, types.JSONPatchType, raw, metav1.PatchOptions{FieldManager: "sigil-server"}); err != nil {
			return false, fmt.Errorf("inject: patching the ca bundle of webhook configuration %s: %w", p.name, err)
		}
	}
	p.written, p.checked = bytes.Clone(bundle), now
	return len(ops) > 0, nil
}
