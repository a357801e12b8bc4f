package installcheck

// Post-install checks: is each part of the installation doing its job?
// They read objects' status as their controllers report it; `sigil check`
// never reaches into the server's admin socket (a Unix socket inside the
// server's pod), so "every agent is attested" reads the agents' pods'
// readiness, which an agent reports only while it holds a valid SVID.

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/deploy"
	"github.com/sigil-mesh/sigil/k8s/evictions"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Names of the installation's objects, as deploy/kubernetes names them
// (a test holds the two together).
const (
	ServerDeployment = "sigil-server"
	AgentDaemonSet   = "sigil-agent"
	// LeaderLease is the Lease the server's replicas elect a leader by.
	LeaderLease = "sigil-server"
	// BundleConfigMap holds the trust bundle (key BundleKey) the agents
	// trust the server by on first contact.
	BundleConfigMap = "sigil-bundle"
	BundleKey       = "bundle.pem"
	WebhookConfig   = "sigil-sidecar-injector"
	WebhookService  = "sigil-server"
	// InjectLabel opts a namespace or a pod in to sidecar injection
	// (value "enabled").
	InjectLabel = "sigil.dev/inject"
	// appLabel selects the pods of a part of the installation.
	appLabel = "app.kubernetes.io/name"
)

// MeshCRDs are the custom resources the server watches that `sigil
// install` ships (Istio's traffic resources, for clusters without Istio,
// and Sigil's Policy).
var MeshCRDs = []string{
	"virtualservices.networking.istio.io",
	"destinationrules.networking.istio.io",
	"policies.security.sigil.dev",
}

// GatewayAPICRDs are the Gateway API routes the server also watches where
// they are served (GAMMA). They are the cluster's, never Sigil's: the
// Gateway API's standard channel installs them.
var GatewayAPICRDs = []string{
	"httproutes.gateway.networking.k8s.io",
	"grpcroutes.gateway.networking.k8s.io",
}

const (
	catControlPlane = "sigil-control-plane"
	catWebhook      = "sigil-injection-webhook"
	catAgents       = "sigil-agents"
)

func postChecks() []Check {
	return []Check{
		{Category: catControlPlane, Name: "the control plane namespace exists", Fatal: true, Run: namespaceExists},
		{Category: catControlPlane, Name: "the CRDs are installed and established", Run: crdsEstablished},
		{Category: catControlPlane, Name: "the Gateway API route CRDs are installed", Run: gatewayCRDs},
		{Category: catControlPlane, Name: "the server Deployment is available", Run: serverAvailable},
		{Category: catControlPlane, Name: "a server replica holds the leader Lease " + LeaderLease, Run: leaderElected},
		{Category: catControlPlane, Name: "the trust bundle is published in ConfigMap " + BundleConfigMap, Run: bundlePublished},
		{Category: catControlPlane, Name: "the agent evictions in ConfigMap " + evictions.DefaultName + " are readable", Run: evictionsReadable},
		{Category: catWebhook, Name: "the webhook configuration " + WebhookConfig + " has a CA bundle", Run: webhookCABundle},
		{Category: catWebhook, Name: "the webhook Service " + WebhookService + " has ready endpoints", Run: webhookEndpoints},
		{Category: catWebhook, Name: "the webhook injects (a dry-run Pod create)", Run: webhookInjects},
		{Category: catAgents, Name: "every node's agent is attested", Run: agentsAttested},
	}
}

func namespaceExists(ctx context.Context, e *Env) Result {
	_, err := e.Clients.Core.CoreV1().Namespaces().Get(ctx, e.Namespace, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fail("no namespace "+e.Namespace, "install Sigil (`sigil install --trust-domain TD | kubectl apply -f -`), or name its namespace with --namespace")
	}
	if err != nil {
		return fail(err.Error(), "")
	}
	return pass(e.Namespace)
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func crdsEstablished(ctx context.Context, e *Env) Result {
	want := slices.Clone(MeshCRDs)
	if out, err := deploy.Render(deploy.Params{TrustDomain: placeholderTrustDomain, Namespace: e.Namespace}); err == nil {
		objs, _ := deploy.Objects(out)
		for _, o := range objs {
			if o.Kind() == kindCRD && !slices.Contains(want, o.Name()) {
				want = append(want, o.Name())
			}
		}
	}
	var missing, pending []string
	for _, name := range want {
		crd, err := e.Clients.Dynamic.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			missing = append(missing, name)
			continue
		}
		if err != nil {
			return fail(err.Error(), "")
		}
		if !crdCondition(crd, "Established") {
			pending = append(pending, name)
		}
	}
	switch {
	case len(missing) > 0:
		return fail("missing: "+strings.Join(missing, ", "), "apply the CRDs `sigil install` prints (or Istio's and the Gateway API's own)")
	case len(pending) > 0:
		return fail("not established yet: "+strings.Join(pending, ", "), "kubectl get crd NAME -o yaml shows the API server's conditions (a name conflict keeps a CRD from being established)")
	}
	return pass(fmt.Sprintf("%d CRDs", len(want)))
}

// gatewayCRDs warns when HTTPRoute or GRPCRoute is not served: the mesh
// works without them, but such routes cannot be applied.
func gatewayCRDs(ctx context.Context, e *Env) Result {
	var missing []string
	for _, name := range GatewayAPICRDs {
		crd, err := e.Clients.Dynamic.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && !crdCondition(crd, "Established")) {
			missing = append(missing, name)
			continue
		}
		if err != nil {
			return fail(err.Error(), "")
		}
	}
	if len(missing) > 0 {
		return warn("not served: "+strings.Join(missing, ", "),
			"HTTPRoute and GRPCRoute (GAMMA) need the Gateway API's CRDs: install its standard channel (v1.6) if you route with them; the server watches them once they are served")
	}
	return pass("")
}

// crdCondition reports whether crd's status has condition typ True.
func crdCondition(crd *unstructured.Unstructured, typ string) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ && m["status"] == "True" {
			return true
		}
	}
	return false
}

func describeHint(kind, name, ns string) string {
	return fmt.Sprintf("kubectl -n %s describe %s %s; kubectl -n %s logs %s/%s", ns, kind, name, ns, kind, name)
}

func serverAvailable(ctx context.Context, e *Env) Result {
	d, err := e.Clients.Core.AppsV1().Deployments(e.Namespace).Get(ctx, ServerDeployment, metav1.GetOptions{})
	if err != nil {
		return fail(err.Error(), "apply `sigil install`'s manifests")
	}
	hint := describeHint("deployment", ServerDeployment, e.Namespace)
	if d.Status.ObservedGeneration < d.Generation {
		return fail(fmt.Sprintf("the Deployment controller has not reported on generation %d yet", d.Generation),
			"the cluster's controller manager updates a Deployment's status: is it running? "+hint)
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	detail := fmt.Sprintf("%d of %d replicas available", d.Status.AvailableReplicas, want)
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue && d.Status.AvailableReplicas > 0 {
			if d.Status.AvailableReplicas < want {
				return warn(detail, "the mesh keeps working on fewer replicas; "+hint)
			}
			return pass(detail)
		}
	}
	return fail(detail, hint)
}

func leaderElected(ctx context.Context, e *Env) Result {
	l, err := e.Clients.Core.CoordinationV1().Leases(e.Namespace).Get(ctx, LeaderLease, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fail("no Lease "+LeaderLease+": no replica has run for leader yet", describeHint("deployment", ServerDeployment, e.Namespace))
	}
	if err != nil {
		return fail(err.Error(), "")
	}
	holder := ""
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if holder == "" || l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return fail("the Lease has no holder", describeHint("deployment", ServerDeployment, e.Namespace))
	}
	expires := l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
	if now := e.Now(); !now.Before(expires) {
		return fail(fmt.Sprintf("%s's lease expired %s ago: no replica renews it", holder, now.Sub(expires).Round(time.Second)),
			describeHint("deployment", ServerDeployment, e.Namespace))
	}
	return pass("held by " + holder)
}

// parseCerts returns the certificates of a PEM bundle, or an error when
// it holds none or a bad one.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("installcheck: a %s block in a certificate bundle", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("installcheck: no PEM certificate")
	}
	return certs, nil
}

func bundlePublished(ctx context.Context, e *Env) Result {
	cm, err := e.Clients.Core.CoreV1().ConfigMaps(e.Namespace).Get(ctx, BundleConfigMap, metav1.GetOptions{})
	hint := "the server publishes it at start; until it does, agents wait (ContainerCreating). " + describeHint("deployment", ServerDeployment, e.Namespace)
	if apierrors.IsNotFound(err) {
		return fail("no ConfigMap "+BundleConfigMap, hint)
	}
	if err != nil {
		return fail(err.Error(), "")
	}
	certs, err := parseCerts([]byte(cm.Data[BundleKey]))
	if err != nil {
		return fail(fmt.Sprintf("%s: %v", BundleKey, err), hint)
	}
	return pass(fmt.Sprintf("%d root(s)", len(certs)))
}

// evictionsReadable reads the agent evictions every server replica
// follows (docs/kubernetes.md, "Eviction"): absent until the first
// eviction; a warning for entries the server cannot read and for a
// ConfigMap past three quarters of its bound.
func evictionsReadable(ctx context.Context, e *Env) Result {
	cm, err := e.Clients.Core.CoreV1().ConfigMaps(e.Namespace).Get(ctx, evictions.DefaultName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return pass("no agent evicted yet")
	}
	if err != nil {
		return fail(err.Error(), "")
	}
	byID, errs := evictions.Parse(cm, time.Now())
	size := 0
	for k, v := range cm.Data {
		size += len(k) + len(v)
	}
	detail := fmt.Sprintf("%d eviction(s), %d of %d bytes", len(byID), size, evictions.MaxBytes)
	switch {
	case len(errs) > 0:
		return warn(fmt.Sprintf("%s; %d entry(s) not understood: %v", detail, len(errs), errs[0]), "the leader drops them at its next pruning; or fix the entry")
	case size > evictions.MaxBytes*3/4:
		return warn(detail, "evictions are refused past the bound; shorten --agent-x509-ttl, after which the leader prunes sooner")
	}
	return pass(detail)
}

func webhookCABundle(ctx context.Context, e *Env) Result {
	mwc, err := e.Clients.Core.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfig, metav1.GetOptions{})
	if err != nil {
		return fail(err.Error(), "apply `sigil install`'s manifests")
	}
	if len(mwc.Webhooks) == 0 {
		return fail("no webhooks in it", "apply `sigil install`'s manifests again")
	}
	for _, w := range mwc.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			return fail(fmt.Sprintf("webhook %s has no caBundle: the server has not patched it", w.Name),
				"the server patches its CA into the configuration once its webhook serves; "+describeHint("deployment", ServerDeployment, e.Namespace))
		}
		if _, err := parseCerts(w.ClientConfig.CABundle); err != nil {
			return fail(fmt.Sprintf("webhook %s: caBundle: %v", w.Name, err),
				"the API server cannot verify the webhook's certificate with it; the server patches its own CA in: "+describeHint("deployment", ServerDeployment, e.Namespace))
		}
	}
	return pass(fmt.Sprintf("%d webhooks", len(mwc.Webhooks)))
}

func webhookEndpoints(ctx context.Context, e *Env) Result {
	eps, err := e.Clients.Core.DiscoveryV1().EndpointSlices(e.Namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + WebhookService})
	if err != nil {
		return fail(err.Error(), "")
	}
	ready := 0
	for _, s := range eps.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				ready++
			}
		}
	}
	if ready == 0 {
		return fail("no ready endpoint", "no server replica is ready, or the cluster's EndpointSlice controller is not running; "+describeHint("deployment", ServerDeployment, e.Namespace))
	}
	return pass(fmt.Sprintf("%d ready", ready))
}

// webhookInjects creates a Pod with dryRun in a namespace that opted in
// (else in default, with the pod label): the API server calls the webhook
// as for a real Pod, and stores nothing. The Pod comes back with the
// sidecar when the webhook answered and injected.
func webhookInjects(ctx context.Context, e *Env) Result {
	ns := "default"
	nss, err := e.Clients.Core.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: InjectLabel + "=enabled"})
	if err != nil {
		return fail(err.Error(), "")
	}
	for _, n := range nss.Items {
		if n.Name != e.Namespace {
			ns = n.Name
			break
		}
	}
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "sigil-check-", Namespace: ns, Labels: map[string]string{InjectLabel: "enabled"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "check", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	got, err := e.Clients.Core.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		hint := "the API server refused the Pod before calling the webhook: the error says why (the test Pod runs as the namespace's default service account)"
		if strings.Contains(err.Error(), "failed calling webhook") {
			hint = "the API server could not have the Pod injected: with failurePolicy Fail, pods that opted in are refused until a server replica answers on " + WebhookService + ":443; " + describeHint("deployment", ServerDeployment, e.Namespace)
		}
		return fail(fmt.Sprintf("dry-run Pod in %s: %v", ns, err), hint)
	}
	if len(got.Spec.InitContainers) == 0 && len(got.Spec.Containers) == len(pod.Spec.Containers) {
		return fail(fmt.Sprintf("the dry-run Pod in %s came back without a sidecar", ns),
			"the webhook answered but injected nothing: see the server's logs; "+describeHint("deployment", ServerDeployment, e.Namespace))
	}
	return pass("namespace " + ns)
}

func agentsAttested(ctx context.Context, e *Env) Result {
	ds, err := e.Clients.Core.AppsV1().DaemonSets(e.Namespace).Get(ctx, AgentDaemonSet, metav1.GetOptions{})
	if err != nil {
		return fail(err.Error(), "apply `sigil install`'s manifests")
	}
	hint := "an agent is Ready only while it holds a valid SVID (its /ready): " + describeHint("daemonset", AgentDaemonSet, e.Namespace)
	if ds.Status.ObservedGeneration < ds.Generation {
		return fail(fmt.Sprintf("the DaemonSet controller has not reported on generation %d yet", ds.Generation),
			"the cluster's controller manager updates a DaemonSet's status: is it running? "+hint)
	}
	desired, ready := ds.Status.DesiredNumberScheduled, ds.Status.NumberReady
	if desired == 0 {
		return fail("no node runs an agent", "kubectl get nodes: the DaemonSet tolerates every taint, so no node is schedulable")
	}
	if ready >= desired {
		return pass(fmt.Sprintf("%d of %d", ready, desired))
	}
	pods, err := e.Clients.Core.CoreV1().Pods(e.Namespace).List(ctx, metav1.ListOptions{LabelSelector: appLabel + "=" + AgentDaemonSet})
	if err != nil {
		return fail(err.Error(), "")
	}
	var notReady []string
	for _, p := range pods.Items {
		if !podReady(&p) {
			notReady = append(notReady, fmt.Sprintf("%s on %s", p.Name, p.Spec.NodeName))
		}
	}
	slices.Sort(notReady)
	detail := fmt.Sprintf("%d of %d attested", ready, desired)
	if len(notReady) > 0 {
		detail += "; not ready: " + strings.Join(notReady, ", ")
	}
	return fail(detail, hint)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
