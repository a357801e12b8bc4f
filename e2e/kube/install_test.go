package kube

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// checkLines maps each check's name, as `sigil check` prints it, to its
// mark (✔, ‼ or ×) and the rest of the line.
func checkLines(out string) map[string]string {
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		for _, mark := range []string{"✔", "‼", "×"} {
			if rest, ok := strings.CutPrefix(l, mark+" "); ok {
				name, _, _ := strings.Cut(rest, ": ")
				lines[name] = mark + " " + rest
			}
		}
	}
	return lines
}

// expectChecks fails the test unless each named check printed the mark
// wanted (and, when given, a detail matching the pattern).
func expectChecks(t *testing.T, out string, want map[string][2]string) {
	t.Helper()
	got := checkLines(out)
	for name, w := range want {
		line, ok := got[name]
		if !ok {
			t.Errorf("no check %q in:\n%s", name, out)
			continue
		}
		if !strings.HasPrefix(line, w[0]+" ") || (w[1] != "" && !regexp.MustCompile(w[1]).MatchString(line)) {
			t.Errorf("check %q: %q; want %s matching %q", name, line, w[0], w[1])
		}
	}
}

func runCheck(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	out, err := harness.Run(t, "sigil", append([]string{"check"}, args...)...)
	t.Logf("sigil check %s:\n%s", strings.Join(args, " "), out)
	if err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("sigil check: %v", err)
	}
	return out, err == nil
}

// TestInstallManifestsAccepted runs the install as a user would against a
// real kube-apiserver: `sigil check --pre` passes as the cluster admin and
// fails, naming what is denied, as an account with no rights; then
// `sigil install | kubectl apply --dry-run=server -f -` is accepted by
// the API server (schema validation, RBAC, the webhook configuration's
// admission checks).
func TestInstallManifestsAccepted(t *testing.T) {
	k := harness.StartKubeBare(t)
	out, ok := runCheck(t, "--pre", "--kubeconfig", k.Kubeconfig)
	if !ok {
		t.Fatalf("sigil check --pre failed against a fresh API server:\n%s", out)
	}
	expectChecks(t, out, map[string][2]string{
		"can query the Kubernetes API":                   {"✔", harness.KubeVersion},
		"Kubernetes is 1.29 or later":                    {"✔", `1\.37`},
		"can create every object `sigil install` prints": {"✔", ""},
		"no Sigil installation is present":               {"✔", ""},
	})

	out, ok = runCheck(t, "--pre", "--kubeconfig", k.KubeconfigFor("shop", "web"))
	if ok {
		t.Fatalf("sigil check --pre passed for a service account with no rights:\n%s", out)
	}
	expectChecks(t, out, map[string][2]string{
		"can create every object `sigil install` prints": {"×", `you may not create .*Namespace.*ClusterRole`},
	})

	manifests := harness.MustRun(t, "sigil", "install", "--trust-domain", "example.org")
	// kubectl's server-side dry run stores nothing, the Namespace
	// included, so the namespaced objects after it would find no
	// namespace: create it first, as the real apply does in order.
	k.Namespace("sigil-system", nil)
	if res, err := k.KubectlStdin([]byte(manifests), "apply", "--dry-run=server", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply --dry-run=server refused the manifests: %v\n%s", err, res)
	} else {
		t.Logf("kubectl apply --dry-run=server:\n%s", res)
	}
	out, ok = runCheck(t, "--pre", "--kubeconfig", k.Kubeconfig)
	if ok {
		t.Fatalf("sigil check --pre passed with the namespace present:\n%s", out)
	}
	expectChecks(t, out, map[string][2]string{"no Sigil installation is present": {"×", `Namespace sigil-system`}})
}

// TestCheckAfterInstall applies the manifests to a real kube-apiserver.
// No controller manager, scheduler or kubelet runs here, so no pod ever
// starts: `sigil check` must fail and name the checks that cannot pass
// (the Deployment and the DaemonSet have no status, no replica leads, the
// webhook has no CA bundle and no endpoints), and pass those that can
// (the namespace, the CRDs the API server establishes itself). The test
// then writes what the controllers and the server would (statuses, the
// Lease, the bundle, the CA bundle, endpoints) and the checks turn green,
// except the webhook's dry-run call, which no process answers.
func TestCheckAfterInstall(t *testing.T) {
	k := harness.StartKube(t)
	manifests := harness.MustRun(t, "sigil", "install", "--trust-domain", "example.org")
	k.Apply(manifests)
	// No controller manager: the "default" service account the dry-run
	// Pod of the webhook check runs as is made by hand.
	k.ServiceAccount("default", "default")

	crds := "×"
	if strings.Contains(manifests, "kind: CustomResourceDefinition") {
		crds = "✔"
	}
	out, ok := runCheck(t, "--kubeconfig", k.Kubeconfig)
	if ok {
		t.Fatalf("sigil check passed with no pod running:\n%s", out)
	}
	expectChecks(t, out, map[string][2]string{
		"can query the Kubernetes API":                                     {"✔", ""},
		"the control plane namespace exists":                               {"✔", "sigil-system"},
		"the CRDs are installed and established":                           {crds, ""},
		"the Gateway API route CRDs are installed":                         {"‼", "not served: httproutes"},
		"the server Deployment is available":                               {"×", "has not reported on generation 1"},
		"a server replica holds the leader Lease sigil-server":             {"×", "no Lease sigil-server"},
		"the trust bundle is published in ConfigMap sigil-bundle":          {"×", "no ConfigMap"},
		"the webhook configuration sigil-sidecar-injector has a CA bundle": {"×", "has no caBundle"},
		"the webhook Service sigil-server has ready endpoints":             {"×", "no ready endpoint"},
		"the webhook injects (a dry-run Pod create)":                       {"×", "dry-run Pod in default: .*inject.sigil.dev"},
		"every node's agent is attested":                                   {"×", "has not reported on generation 1"},
	})

	// What the controllers and the server would write.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := k.Clients.Core
	ns := "sigil-system"
	now := metav1.Now()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	d, err := c.AppsV1().Deployments(ns).Get(ctx, "sigil-server", metav1.GetOptions{})
	must(d, err)
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 2, ReadyReplicas: 2, AvailableReplicas: 2, UpdatedReplicas: 2,
		Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, LastUpdateTime: now, LastTransitionTime: now}}}
	must(c.AppsV1().Deployments(ns).UpdateStatus(ctx, d, metav1.UpdateOptions{}))
	holder, duration := "sigil-server-abc12", int32(15)
	renew := metav1.NewMicroTime(time.Now())
	must(c.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "sigil-server"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &duration, AcquireTime: &renew, RenewTime: &renew}}, metav1.CreateOptions{}))
	must(c.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "sigil-bundle"},
		Data: map[string]string{"bundle.pem": string(k.CAPEM())}}, metav1.CreateOptions{}))
	mwc, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "sigil-sidecar-injector", metav1.GetOptions{})
	must(mwc, err)
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.CABundle = k.CAPEM()
	}
	must(c.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, mwc, metav1.UpdateOptions{}))
	ready, port, portName := true, int32(8443), "webhook"
	must(c.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "sigil-server-x1", Labels: map[string]string{discoveryv1.LabelServiceName: "sigil-server"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.7"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}, metav1.CreateOptions{}))
	// Two nodes' agents, one of them not ready (not attested).
	k.Pod(ns, "sigil-agent-a", "sigil-agent", "node-a", map[string]string{"app.kubernetes.io/name": "sigil-agent"})
	b := k.Pod(ns, "sigil-agent-b", "sigil-agent", "node-b", map[string]string{"app.kubernetes.io/name": "sigil-agent"})
	b.Status.Conditions[0].Status = corev1.ConditionFalse
	b, err = c.CoreV1().Pods(ns).UpdateStatus(ctx, b, metav1.UpdateOptions{})
	must(b, err)
	setAgents := func(desired, ready int32) {
		t.Helper()
		ds, err := c.AppsV1().DaemonSets(ns).Get(ctx, "sigil-agent", metav1.GetOptions{})
		must(ds, err)
		ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation, DesiredNumberScheduled: desired, CurrentNumberScheduled: desired, NumberReady: ready, NumberAvailable: ready}
		must(c.AppsV1().DaemonSets(ns).UpdateStatus(ctx, ds, metav1.UpdateOptions{}))
	}
	setAgents(2, 1)

	out, ok = runCheck(t, "--kubeconfig", k.Kubeconfig)
	if ok {
		t.Fatalf("sigil check passed with one agent not attested and no webhook answering:\n%s", out)
	}
	expectChecks(t, out, map[string][2]string{
		"the server Deployment is available":                               {"✔", "2 of 2 replicas available"},
		"a server replica holds the leader Lease sigil-server":             {"✔", "held by " + holder},
		"the trust bundle is published in ConfigMap sigil-bundle":          {"✔", "1 root"},
		"the webhook configuration sigil-sidecar-injector has a CA bundle": {"✔", "2 webhooks"},
		"the webhook Service sigil-server has ready endpoints":             {"✔", "1 ready"},
		"the webhook injects (a dry-run Pod create)":                       {"×", "dry-run Pod in default: .*inject.sigil.dev"},
		"every node's agent is attested":                                   {"×", "1 of 2 attested; not ready: sigil-agent-b on node-b"},
	})

	// The agent on node-b attests; the leader stops renewing.
	b.Status.Conditions[0].Status = corev1.ConditionTrue
	must(c.CoreV1().Pods(ns).UpdateStatus(ctx, b, metav1.UpdateOptions{}))
	setAgents(2, 2)
	past := metav1.NewMicroTime(time.Now().Add(-time.Minute))
	patch := `{"spec":{"renewTime":"` + past.UTC().Format(metav1.RFC3339Micro) + `"}}`
	must(c.CoordinationV1().Leases(ns).Patch(ctx, "sigil-server", types.MergePatchType, []byte(patch), metav1.PatchOptions{}))
	out, _ = runCheck(t, "--kubeconfig", k.Kubeconfig)
	expectChecks(t, out, map[string][2]string{
		"every node's agent is attested":                       {"✔", "2 of 2"},
		"a server replica holds the leader Lease sigil-server": {"×", holder + "'s lease expired .* ago"},
	})
}

// TestServerPublishesTrustBundle runs the real sigil-server against the
// API server as the service account the manifests create, with exactly
// the RBAC they grant: it publishes its trust bundle in the ConfigMap
// sigil-bundle the agents' DaemonSet mounts, identical to `sigil-server
// bundle show`, and `sigil check` finds it. (No kubelet: the server runs
// here as a process, as its pod would run it.)
func TestServerPublishesTrustBundle(t *testing.T) {
	k := harness.StartKube(t)
	k.Apply(harness.MustRun(t, "sigil", "install", "--trust-domain", harness.TrustDomain))
	m := harness.StartMesh(t, "--kubernetes", "--kubeconfig", k.KubeconfigFor("sigil-system", "sigil-server"))
	m.Server.WaitFor(`"msg":"kubernetes part started".*"part":"trust bundle"`, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cm, err := k.Clients.Core.CoreV1().ConfigMaps("sigil-system").Get(ctx, "sigil-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := m.Admin("bundle", "show"); cm.Data["bundle.pem"] != want || want == "" {
		t.Fatalf("ConfigMap sigil-bundle holds %q; sigil-server bundle show prints %q", cm.Data["bundle.pem"], want)
	}
	out, _ := runCheck(t, "--kubeconfig", k.Kubeconfig)
	expectChecks(t, out, map[string][2]string{"the trust bundle is published in ConfigMap sigil-bundle": {"✔", "1 root"}})
}
