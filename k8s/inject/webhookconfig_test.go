package inject

import (
	"os"
	"reflect"
	"strings"
	"testing"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// TestWebhookConfigurationDocumented: the configuration docs/kubernetes.md
// shows (what the install manifests ship) is WebhookConfiguration's,
// field for field. (The real API server accepts and uses it in
// e2e/kube's TestSidecarInjectionWebhook.)
func TestWebhookConfigurationDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "### The webhook configuration\n")
	if !ok {
		t.Fatal("docs/kubernetes.md has no \"### The webhook configuration\"")
	}
	_, rest, ok = strings.Cut(rest, "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```\n")
	if !ok || !ok2 {
		t.Fatal("no yaml block under \"### The webhook configuration\"")
	}
	var got admissionregv1.MutatingWebhookConfiguration
	if err := yaml.UnmarshalStrict([]byte(block), &got); err != nil {
		t.Fatalf("documented configuration: %v", err)
	}
	want := WebhookConfiguration("sigil-system", DefaultWebhookPort)
	if !reflect.DeepEqual(&got, want) {
		w, _ := yaml.Marshal(want)
		t.Fatalf("docs/kubernetes.md shows a configuration other than WebhookConfiguration's:\n%s", w)
	}
}
