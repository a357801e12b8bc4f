package kube

import (
	"context"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/e2e/harness"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestAPIServerHarness shows the suite's API server is the real one the
// other tests rely on: it reports v1.37.2, kubectl reaches it, RBAC is on,
// a Pod object can be bound and marked running without a kubelet, and a
// pod-bound token of a chosen audience passes TokenReview with the pod in
// its extra fields (what projected-token node attestation checks).
func TestAPIServerHarness(t *testing.T) {
	k := harness.StartKube(t)
	v, err := k.Clients.Core.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != harness.KubeVersion {
		t.Fatalf("API server version %s, want %s", v.GitVersion, harness.KubeVersion)
	}
	if out := k.Kubectl("get", "clusterroles", "-o", "name"); !strings.Contains(out, "clusterrole.rbac.authorization.k8s.io/cluster-admin") {
		t.Fatalf("RBAC's bootstrap roles missing: %s", out)
	}
	pod := k.Pod("shop", "web-0", "web", "node-a", map[string]string{"app": "web"})
	if pod.Spec.NodeName != "node-a" || pod.Status.Phase != "Running" {
		t.Fatalf("pod %s/%s: node %q phase %q", pod.Namespace, pod.Name, pod.Spec.NodeName, pod.Status.Phase)
	}
	token := k.Token("shop", "web", "sigil-server", pod)
	review, err := k.Clients.Core.AuthenticationV1().TokenReviews().Create(context.Background(), &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{"sigil-server"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := review.Status
	if !st.Authenticated || st.User.Username != "system:serviceaccount:shop:web" {
		t.Fatalf("token review: %+v", st)
	}
	if got := st.User.Extra["authentication.kubernetes.io/pod-name"]; len(got) != 1 || got[0] != "web-0" {
		t.Fatalf("token review extra pod-name = %v", got)
	}
	// A service account's kubeconfig is held to RBAC: it may not list pods.
	sa, err := harness.KubeconfigClients(k.KubeconfigFor("shop", "web"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Core.CoreV1().Pods("shop").List(context.Background(), metav1.ListOptions{}); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("a service account with no role listed pods: %v", err)
	}
}
