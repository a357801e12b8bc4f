package inject

import (
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultWebhookPort is the Service port the webhook configuration calls
// (the server's --webhook-bind port).
const DefaultWebhookPort = 8443

// WebhookConfiguration is the MutatingWebhookConfiguration that sends Pod
// creations to the injector served by the Service ServiceName in
// namespace ns on port: what the install manifests ship, with caBundle
// left empty for the server to fill in. It holds two webhooks, as Istio's
// injector does, because one webhook's selectors cannot say "namespace
// label OR pod label": namespace.inject.sigil.dev for Pods of namespaces
// labelled sigil.dev/inject=enabled, and object.inject.sigil.dev for Pods
// labelled so in other namespaces. Neither is called for the cluster's
// own namespaces nor for ns itself, so the server never depends on its
// own webhook to start. failurePolicy is Fail: a Pod that asked for the
// mesh is never created without it (the injector, not the selectors, is
// the last word: it applies the same rules).
func WebhookConfiguration(ns string, port int32) *admissionregv1.MutatingWebhookConfiguration {
	path := Path
	fail := admissionregv1.Fail
	none := admissionregv1.SideEffectClassNone
	ifNeeded := admissionregv1.IfNeededReinvocationPolicy
	equivalent := admissionregv1.Equivalent
	timeout := int32(10)
	scope := admissionregv1.NamespacedScope
	never := metav1.LabelSelectorRequirement{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: append(append([]string(nil), neverInjected...), ns)}
	hook := func(name string, nsSel metav1.LabelSelectorRequirement, objSel *metav1.LabelSelector) admissionregv1.MutatingWebhook {
		return admissionregv1.MutatingWebhook{
			Name: name,
			ClientConfig: admissionregv1.WebhookClientConfig{Service: &admissionregv1.ServiceReference{
				Namespace: ns, Name: ServiceName, Path: &path, Port: &port}},
			Rules: []admissionregv1.RuleWithOperations{{
				Operations: []admissionregv1.OperationType{admissionregv1.Create},
				Rule:       admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}, Scope: &scope},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{nsSel, never}},
			ObjectSelector:          objSel,
			FailurePolicy:           &fail,
			MatchPolicy:             &equivalent,
			SideEffects:             &none,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      &ifNeeded,
		}
	}
	return &admissionregv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: DefaultWebhookConfig, Labels: map[string]string{"app.kubernetes.io/part-of": "sigil"}},
		Webhooks: []admissionregv1.MutatingWebhook{
			hook("namespace.inject.sigil.dev",
				metav1.LabelSelectorRequirement{Key: LabelInject, Operator: metav1.LabelSelectorOpIn, Values: []string{LabelInjectEnabled}}, nil),
			hook("object.inject.sigil.dev",
				metav1.LabelSelectorRequirement{Key: LabelInject, Operator: metav1.LabelSelectorOpNotIn, Values: []string{LabelInjectEnabled}},
				&metav1.LabelSelector{MatchLabels: map[string]string{LabelInject: LabelInjectEnabled}}),
		},
	}
}
