package deploy

import (
	"encoding/json"
	"testing"

	"github.com/sigil-mesh/sigil/k8s/inject"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// TestWebhookConfigurationIsInjects holds the manifest's webhook
// configuration to the one k8s/inject builds (and documents), for the
// Service port the manifests give the webhook (443 → the server's 8443).
func TestWebhookConfigurationIsInjects(t *testing.T) {
	for _, ns := range []string{DefaultNamespace, "mesh"} {
		got := find(t, render(t, Params{TrustDomain: "example.org", Namespace: ns}), "MutatingWebhookConfiguration", "sigil-sidecar-injector")
		b, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		var cfg admissionregv1.MutatingWebhookConfiguration
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		want := inject.WebhookConfiguration(ns, 443)
		want.Labels = cfg.Labels // the manifests add app.kubernetes.io/name
		gotYAML, _ := yaml.Marshal(cfg)
		wantYAML, _ := yaml.Marshal(want)
		if string(gotYAML) != string(wantYAML) {
			t.Errorf("namespace %s: deploy/kubernetes/50-webhook.yaml renders\n%s\nk8s/inject.WebhookConfiguration builds\n%s", ns, gotYAML, wantYAML)
		}
	}
}
