package installcheck

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/deploy"
	"github.com/sigil-mesh/sigil/k8s/evictions"
	"github.com/sigil-mesh/sigil/kube"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

const ns = "sigil-system"

var now = time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)

// fakeEnv is an Env over client-go's fakes holding objs (typed) and crds
// (CustomResourceDefinitions, for the dynamic client).
func fakeEnv(t *testing.T, objs []runtime.Object, dyn ...runtime.Object) (*Env, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	listKinds := map[schema.GroupVersionResource]string{crdGVR: "CustomResourceDefinitionList"}
	for _, p := range manifestResources(t) {
		listKinds[p] = "List"
	}
	d := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, dyn...)
	return &Env{Clients: &kube.Clients{Config: &rest.Config{Host: "https://api.test"}, Core: cs, Dynamic: d}, Namespace: ns, Now: func() time.Time { return now }}, cs
}

// manifestResources gives each kind of the manifests its resource as the
// API server's discovery would (every kind there pluralizes with "s"), and
// tells the fake discovery about them.
func manifestResources(t *testing.T) []schema.GroupVersionResource {
	t.Helper()
	out, err := deploy.Render(deploy.Params{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := deploy.Objects(out)
	if err != nil {
		t.Fatal(err)
	}
	var gvrs []schema.GroupVersionResource
	for _, o := range objs {
		gv, _ := schema.ParseGroupVersion(o.APIVersion())
		gvrs = append(gvrs, gv.WithResource(strings.ToLower(o.Kind())+"s"))
	}
	return gvrs
}

func withDiscovery(t *testing.T, cs *fake.Clientset, major, minor string) {
	t.Helper()
	fd := cs.Discovery().(*fakediscovery.FakeDiscovery)
	fd.FakedServerVersion = &version.Info{Major: major, Minor: minor, GitVersion: "v" + major + "." + minor + ".0"}
	lists := map[string]*metav1.APIResourceList{}
	out, _ := deploy.Render(deploy.Params{TrustDomain: "example.org"})
	objs, _ := deploy.Objects(out)
	for _, o := range objs {
		l := lists[o.APIVersion()]
		if l == nil {
			l = &metav1.APIResourceList{GroupVersion: o.APIVersion()}
			lists[o.APIVersion()] = l
			fd.Resources = append(fd.Resources, l)
		}
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: strings.ToLower(o.Kind()) + "s", Kind: o.Kind()})
	}
}

func TestKubernetesVersion(t *testing.T) {
	for _, tc := range []struct {
		major, minor string
		want         Status
	}{
		{"1", "28", Fail}, {"1", "29", Pass}, {"1", "37", Pass}, {"1", "30+", Pass}, {"1", "28+", Fail}, {"2", "0", Fail}, {"1", "x", Fail},
	} {
		e, cs := fakeEnv(t, nil)
		withDiscovery(t, cs, tc.major, tc.minor)
		if got := apiChecks()[1].Run(context.Background(), e); got.Status != tc.want {
			t.Errorf("%s.%s: %+v, want status %d", tc.major, tc.minor, got, tc.want)
		}
	}
}

// selfCert is a PEM certificate, as a CA bundle would hold.
func selfCert(t *testing.T) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"}, NotBefore: now, NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestPostChecks(t *testing.T) {
	cert := selfCert(t)
	two := int32(2)
	holder, dur := "sigil-server-0", int32(15)
	renewed := func(ago time.Duration) *metav1.MicroTime { m := metav1.NewMicroTime(now.Add(-ago)); return &m }
	deployment := func(gen, observed int64, available int32, cond corev1.ConditionStatus) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: ServerDeployment, Namespace: ns, Generation: gen}, Spec: appsv1.DeploymentSpec{Replicas: &two},
			Status: appsv1.DeploymentStatus{ObservedGeneration: observed, AvailableReplicas: available, Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: cond}}}}
	}
	lease := func(holder string, ago time.Duration) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: LeaderLease, Namespace: ns}, Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: renewed(ago)}}
	}
	bundle := func(data string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: BundleConfigMap, Namespace: ns}, Data: map[string]string{BundleKey: data}}
	}
	evicted := func(data map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: evictions.DefaultName, Namespace: ns}, Data: data}
	}
	const agent = "spiffe://example.org/sigil/agent/k8s_psat/c/n1"
	const evictedEntry = `{"agent":"` + agent + `","evicted_at":"2026-11-30T10:00:00.5Z","replica":"sigil-server-0","until":"2026-11-30T11:00:10.5Z"}`
	hooks := func(bundles ...[]byte) *admissionregistrationv1.MutatingWebhookConfiguration {
		m := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: WebhookConfig}}
		for i, b := range bundles {
			m.Webhooks = append(m.Webhooks, admissionregistrationv1.MutatingWebhook{Name: []string{"a.sigil.dev", "b.sigil.dev"}[i], ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: b}})
		}
		return m
	}
	slice := func(ready *bool) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "s1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: WebhookService}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}}}
	}
	yes, no := true, false
	daemonSet := func(gen, observed int64, desired, ready int32) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: AgentDaemonSet, Namespace: ns, Generation: gen},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: observed, DesiredNumberScheduled: desired, NumberReady: ready}}
	}
	agentPod := func(name, node string, ready corev1.ConditionStatus) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{appLabel: AgentDaemonSet}}, Spec: corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}}}
	}
	for _, tc := range []struct {
		name   string
		check  func(context.Context, *Env) Result
		objs   []runtime.Object
		want   Status
		detail string
	}{
		{"namespace missing", namespaceExists, nil, Fail, "no namespace sigil-system"},
		{"namespace", namespaceExists, []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}}, Pass, ns},
		{"deployment missing", serverAvailable, nil, Fail, "not found"},
		{"deployment not observed", serverAvailable, []runtime.Object{deployment(2, 1, 2, corev1.ConditionTrue)}, Fail, "generation 2"},
		{"deployment unavailable", serverAvailable, []runtime.Object{deployment(1, 1, 0, corev1.ConditionFalse)}, Fail, "0 of 2"},
		{"deployment degraded", serverAvailable, []runtime.Object{deployment(1, 1, 1, corev1.ConditionTrue)}, Warn, "1 of 2"},
		{"deployment available", serverAvailable, []runtime.Object{deployment(1, 1, 2, corev1.ConditionTrue)}, Pass, "2 of 2"},
		{"lease missing", leaderElected, nil, Fail, "no Lease"},
		{"lease without holder", leaderElected, []runtime.Object{lease("", 0)}, Fail, "no holder"},
		{"lease expired", leaderElected, []runtime.Object{lease(holder, 20*time.Second)}, Fail, "expired 5s ago"},
		{"lease expiring now", leaderElected, []runtime.Object{lease(holder, 15*time.Second)}, Fail, "expired"},
		{"lease held", leaderElected, []runtime.Object{lease(holder, 5*time.Second)}, Pass, "held by " + holder},
		{"bundle missing", bundlePublished, nil, Fail, "no ConfigMap"},
		{"bundle empty", bundlePublished, []runtime.Object{bundle("")}, Fail, "no PEM certificate"},
		{"bundle not a certificate", bundlePublished, []runtime.Object{bundle("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}, Fail, "PRIVATE KEY block"},
		{"bundle", bundlePublished, []runtime.Object{bundle(string(cert) + string(cert))}, Pass, "2 root"},
		{"evictions none yet", evictionsReadable, nil, Pass, "no agent evicted yet"},
		{"evictions", evictionsReadable, []runtime.Object{evicted(map[string]string{evictions.Key(agent): evictedEntry})}, Pass, "1 eviction(s)"},
		{"evictions not understood", evictionsReadable, []runtime.Object{evicted(map[string]string{"x": "{"})}, Warn, "1 entry(s) not understood"},
		{"evictions nearing the bound", evictionsReadable, []runtime.Object{evicted(map[string]string{"x": evictedEntry, "pad": strings.Repeat("x", evictions.MaxBytes*4/5)})}, Warn, "of 786432 bytes"},
		{"webhook missing", webhookCABundle, nil, Fail, "not found"},
		{"webhook one unpatched", webhookCABundle, []runtime.Object{hooks(cert, nil)}, Fail, "b.sigil.dev has no caBundle"},
		{"webhook bad bundle", webhookCABundle, []runtime.Object{hooks([]byte("junk"), cert)}, Fail, "a.sigil.dev: caBundle"},
		{"webhook patched", webhookCABundle, []runtime.Object{hooks(cert, cert)}, Pass, "2 webhooks"},
		{"endpoints none", webhookEndpoints, nil, Fail, "no ready endpoint"},
		{"endpoints not ready", webhookEndpoints, []runtime.Object{slice(&no)}, Fail, "no ready endpoint"},
		{"endpoints ready", webhookEndpoints, []runtime.Object{slice(&yes)}, Pass, "1 ready"},
		{"endpoints ready unset", webhookEndpoints, []runtime.Object{slice(nil)}, Pass, "1 ready"},
		{"agents missing", agentsAttested, nil, Fail, "not found"},
		{"agents not observed", agentsAttested, []runtime.Object{daemonSet(1, 0, 0, 0)}, Fail, "generation 1"},
		{"agents none scheduled", agentsAttested, []runtime.Object{daemonSet(1, 1, 0, 0)}, Fail, "no node runs an agent"},
		{"agents one not attested", agentsAttested, []runtime.Object{daemonSet(1, 1, 2, 1), agentPod("a-1", "n1", corev1.ConditionTrue), agentPod("a-2", "n2", corev1.ConditionFalse)}, Fail, "1 of 2 attested; not ready: a-2 on n2"},
		{"agents attested", agentsAttested, []runtime.Object{daemonSet(1, 1, 2, 2)}, Pass, "2 of 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := fakeEnv(t, tc.objs)
			got := tc.check(context.Background(), e)
			if got.Status != tc.want || !strings.Contains(got.Detail, tc.detail) {
				t.Fatalf("got %+v; want status %d with detail %q", got, tc.want, tc.detail)
			}
			if got.Status != Pass && got.Hint == "" && !strings.Contains(got.Detail, "not found") {
				t.Errorf("a failing check with no hint: %+v", got)
			}
		})
	}
}

func crd(name string, established bool) *unstructured.Unstructured {
	status := "False"
	if established {
		status = "True"
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": name},
		"status":   map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": status}}},
	}}
}

func TestCRDsEstablished(t *testing.T) {
	all := func(established bool) []runtime.Object {
		var objs []runtime.Object
		for _, n := range MeshCRDs {
			objs = append(objs, crd(n, established))
		}
		return objs
	}
	for _, tc := range []struct {
		name   string
		crds   []runtime.Object
		want   Status
		detail string
	}{
		{"none", nil, Fail, "missing: virtualservices.networking.istio.io"},
		{"one missing", all(true)[1:], Fail, "missing: virtualservices.networking.istio.io"},
		{"not established", all(false), Fail, "not established yet"},
		{"all", all(true), Pass, "3 CRDs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := fakeEnv(t, nil, tc.crds...)
			got := crdsEstablished(context.Background(), e)
			if got.Status != tc.want || !strings.Contains(got.Detail, tc.detail) {
				t.Fatalf("got %+v; want status %d with %q", got, tc.want, tc.detail)
			}
		})
	}
}

func TestGatewayCRDs(t *testing.T) {
	e, _ := fakeEnv(t, nil, crd(GatewayAPICRDs[0], true))
	if got := gatewayCRDs(context.Background(), e); got.Status != Warn || !strings.Contains(got.Detail, "not served: "+GatewayAPICRDs[1]) {
		t.Fatalf("one route CRD missing: %+v; want a warning naming %s", got, GatewayAPICRDs[1])
	}
	e, _ = fakeEnv(t, nil, crd(GatewayAPICRDs[0], true), crd(GatewayAPICRDs[1], true))
	if got := gatewayCRDs(context.Background(), e); got.Status != Pass {
		t.Fatalf("both served: %+v", got)
	}
}

func TestWebhookInjects(t *testing.T) {
	inject := func(action k8stesting.Action) (bool, runtime.Object, error) {
		pod := action.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: "sigil-proxy"})
		return true, pod, nil
	}
	refuse := func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New(`Internal error occurred: failed calling webhook "object.inject.sigil.dev": no endpoints`)
	}
	forbid := func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New(`pods "sigil-check-" is forbidden: error looking up service account default/default`)
	}
	labeled := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{InjectLabel: "enabled"}}}
	for _, tc := range []struct {
		name    string
		objs    []runtime.Object
		reactor k8stesting.ReactionFunc
		want    Status
		detail  string
	}{
		{"not injected", nil, nil, Fail, "came back without a sidecar"},
		{"webhook down", nil, refuse, Fail, "dry-run Pod in default: Internal error"},
		{"refused before the webhook", nil, forbid, Fail, "is forbidden"},
		{"injected in default", nil, inject, Pass, "namespace default"},
		{"injected in the opted-in namespace", []runtime.Object{labeled}, inject, Pass, "namespace shop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, cs := fakeEnv(t, tc.objs)
			var dryRun []string
			cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				dryRun = a.(k8stesting.CreateActionImpl).CreateOptions.DryRun
				if tc.reactor != nil {
					return tc.reactor(a)
				}
				return true, a.(k8stesting.CreateAction).GetObject(), nil
			})
			got := webhookInjects(context.Background(), e)
			if got.Status != tc.want || !strings.Contains(got.Detail, tc.detail) {
				t.Fatalf("got %+v; want status %d with %q", got, tc.want, tc.detail)
			}
			if calledWebhook := strings.Contains(got.Hint, "could not have the Pod injected"); got.Status == Fail && calledWebhook != strings.Contains(got.Detail, "failed calling webhook") {
				t.Errorf("hint %q does not fit the failure %q", got.Hint, got.Detail)
			}
			if len(dryRun) != 1 || dryRun[0] != metav1.DryRunAll {
				t.Fatalf("the Pod was created with dryRun %q: the check must store nothing", dryRun)
			}
		})
	}
}

func TestPreChecks(t *testing.T) {
	allowExcept := func(denied string) k8stesting.ReactionFunc {
		return func(a k8stesting.Action) (bool, runtime.Object, error) {
			r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
			r.Status.Allowed = r.Spec.ResourceAttributes.Verb == "create" && r.Spec.ResourceAttributes.Resource != denied
			return true, r, nil
		}
	}
	existing := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "sigil-server"}}}
	for _, tc := range []struct {
		name   string
		check  func(context.Context, *Env) Result
		denied string
		dyn    []runtime.Object
		want   Status
		detail string
	}{
		{"may create all", canCreateAll, "", nil, Pass, "kinds"},
		{"may not create cluster roles", canCreateAll, "clusterroles", nil, Fail, "you may not create ClusterRole"},
		{"may not create deployments", canCreateAll, "deployments", nil, Fail, "you may not create Deployment in sigil-system"},
		{"no installation", noInstallation, "", nil, Pass, ""},
		{"installed", noInstallation, "", []runtime.Object{existing}, Fail, "ClusterRole sigil-server exist"},
		{"no foreign CRDs", noForeignCRDs, "", nil, Pass, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, cs := fakeEnv(t, nil, tc.dyn...)
			withDiscovery(t, cs, "1", "37")
			cs.PrependReactor("create", "selfsubjectaccessreviews", allowExcept(tc.denied))
			got := tc.check(context.Background(), e)
			if got.Status != tc.want || !strings.Contains(got.Detail, tc.detail) {
				t.Fatalf("got %+v; want status %d with %q", got, tc.want, tc.detail)
			}
		})
	}
}

func TestRunStopsAtFatalAndCountsWarnings(t *testing.T) {
	res := func(r Result) func(context.Context, *Env) Result {
		return func(context.Context, *Env) Result { return r }
	}
	ran := false
	for _, tc := range []struct {
		name   string
		checks []Check
		ok     bool
		out    []string
	}{
		{"pass and warn", []Check{
			{Category: "a", Name: "one", Run: res(pass("fine"))},
			{Category: "b", Name: "two", Run: res(warn("meh", "do x"))},
		}, true, []string{"a\n-\n✔ one: fine\n", "b\n-\n‼ two: meh\n    do x\n", "Status check results are ✔"}},
		{"fatal stops", []Check{
			{Category: "a", Name: "one", Fatal: true, Run: res(fail("down", "fix it"))},
			{Category: "a", Name: "two", Run: func(context.Context, *Env) Result { ran = true; return pass("") }},
		}, false, []string{"× one: down\n    fix it\n", "stopped", "Status check results are ×"}},
		{"failure goes on", []Check{
			{Category: "a", Name: "one", Run: res(fail("bad", ""))},
			{Category: "a", Name: "two", Run: res(pass(""))},
		}, false, []string{"× one: bad\n✔ two\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if ok := Run(context.Background(), &b, &Env{}, tc.checks); ok != tc.ok {
				t.Errorf("Run = %v, want %v", ok, tc.ok)
			}
			for _, want := range tc.out {
				if !strings.Contains(b.String(), want) {
					t.Errorf("output %q: no %q", b.String(), want)
				}
			}
		})
	}
	if ran {
		t.Error("a check after a fatal failure ran")
	}
}

// TestNamesMatchManifests holds the names the checks look for to the
// manifests that create them.
func TestNamesMatchManifests(t *testing.T) {
	out, err := deploy.Render(deploy.Params{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	objs, _ := deploy.Objects(out)
	has := func(kind, name string) bool {
		for _, o := range objs {
			if o.Kind() == kind && o.Name() == name {
				return true
			}
		}
		return false
	}
	for _, want := range [][2]string{
		{"Deployment", ServerDeployment}, {"DaemonSet", AgentDaemonSet}, {"MutatingWebhookConfiguration", WebhookConfig}, {"Service", WebhookService},
	} {
		if !has(want[0], want[1]) {
			t.Errorf("the manifests hold no %s %s", want[0], want[1])
		}
	}
	for _, want := range []string{"resourceNames: [\"" + LeaderLease + "\"]", "resourceNames: [\"" + BundleConfigMap + "\"]", "name: " + BundleConfigMap, "/" + BundleKey, appLabel + ": " + AgentDaemonSet} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the manifests hold no %q", want)
		}
	}
}

// TestManifestsShipMeshCRDs: `sigil install` prints a CRD for every
// resource the server watches (deploy/crds, joined in deploy's
// manifestSets), so a cluster without Istio or the Gateway API gets them.
func TestManifestsShipMeshCRDs(t *testing.T) {
	out, err := deploy.Render(deploy.Params{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	objs, _ := deploy.Objects(out)
	var missing []string
	for _, name := range MeshCRDs {
		found := false
		for _, o := range objs {
			found = found || (o.Kind() == "CustomResourceDefinition" && o.Name() == name)
		}
		if !found {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Errorf("sigil install prints no CRD for %s: deploy/crds must join deploy.manifestSets", strings.Join(missing, ", "))
	}
}
