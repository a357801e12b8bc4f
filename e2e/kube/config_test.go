package kube

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/deploy"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	vsGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	drGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
)

// apiDR makes api's subsets by version, balanced round robin so that,
// without a VirtualService, sequential requests reach both versions (the
// default balancer favours the faster one).
const apiDR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec:
  host: api
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

func apiVS(v1, v2 int) string {
	return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api]
  http:
  - route:
    - {destination: {host: api, subset: v1}, weight: ` + strconv.Itoa(v1) + `}
    - {destination: {host: api, subset: v2}, weight: ` + strconv.Itoa(v2) + `}
`
}

// statPrefix is a real Istio field (HTTPMatchRequest.statPrefix) Sigil
// does not read, so it refuses the resource naming it.
const refusedVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: refused, namespace: default}
spec:
  hosts: [refused]
  http:
  - match: [{uri: {prefix: /}, statPrefix: refused}]
    route: [{destination: {host: api}}]
`

// TestConfigFromCRDs applies Sigil's CRDs to a real API server, runs
// sigil-server with --kubernetes, and shows that `kubectl apply` of a
// VirtualService and DestinationRule changes routing through real
// sidecars, that a VirtualService Sigil refuses gets Accepted=False with
// the reason and the field in its status, and that deleting the
// VirtualService removes its route.
//
// No kubelet runs, and the identities are not the point here: the web
// and api sidecars run as plain-host processes, their agents attested
// with join tokens and their identities from registration entries, and
// api's two versions register their endpoints through their agent.
func TestConfigFromCRDs(t *testing.T) {
	k := harness.StartKube(t)
	if out, err := k.KubectlStdin(deploy.CRDs(), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply of deploy/crds: %v: %s", err, out)
	}
	k.Kubectl("wait", "--for=condition=Established", "--timeout=60s",
		"crd/virtualservices.networking.istio.io", "crd/destinationrules.networking.istio.io", "crd/policies.security.sigil.dev")

	k.Namespace("sigil-system", nil)                                                              // the server publishes its trust bundle there (sigil install creates it)
	m := harness.StartMesh(t, "--kubernetes", "--kubeconfig", k.Kubeconfig, "--webhook-bind", "") // no webhook: its fixed port clashes with other tests' servers
	m.Server.WaitFor(`"msg":"kubernetes configuration: watching".*"kind":"VirtualService.networking.istio.io"`, 30*time.Second)
	uid := strconv.Itoa(os.Getuid())
	td := spiffeid.RequireTrustDomainFromString(harness.TrustDomain)
	for node, sa := range map[string]string{"node-web": "web", "node-api": "api"} {
		id, err := naming.WorkloadID(td, "default", sa)
		if err != nil {
			t.Fatal(err)
		}
		m.Entry(node, id.String(), "--selector", "unix:uid:"+uid)
	}
	webAgent, apiAgent := m.StartAgent("node-web"), m.StartAgent("node-api")
	policyDir := allowAllPolicy(t, m.Dir)
	for _, v := range []string{"v1", "v2"} {
		_, app := harness.StartApp(t, "api-"+v)
		harness.StartProxy(t, apiAgent, "api", app, policyDir, "--label", "version="+v)
	}
	_, webApp := harness.StartApp(t, "web")
	web := harness.StartProxy(t, webAgent, "web", webApp, policyDir, "--label", "app=web")
	proxyURL, _ := url.Parse("http://" + web.Outbound)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	admin := adminv1.NewAdminClient(adminv1.AdminSocket(m.DataDir))

	// tally sends n requests to api through web's sidecar, once every
	// sidecar runs the server's config, and counts the answers by
	// version.
	tally := func(n int) map[string]int {
		t.Helper()
		return countAnswers(t, admin, client, 3, n, nil)
	}
	waitBoth := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if got := tally(20); got["api-v1"] > 0 && got["api-v2"] > 0 {
				return
			} else if time.Now().After(deadline) {
				t.Fatalf("api's two versions not both reached without a VirtualService routing them: %v", got)
			}
		}
	}
	k.Apply(apiDR)
	if cond := waitAccepted(t, k, drGVR, "api"); cond["status"] != "True" {
		t.Fatalf("DestinationRule api: Accepted condition %v", cond)
	}
	waitBoth()

	// All of api's traffic to v1, then all of it to v2: each kubectl
	// apply reaches the sidecars.
	for _, step := range []struct{ v1, v2 int }{{100, 0}, {0, 100}} {
		k.Apply(apiVS(step.v1, step.v2))
		cond := waitAccepted(t, k, vsGVR, "api")
		if cond["status"] != "True" || cond["reason"] != "Accepted" {
			t.Fatalf("VirtualService api %d/%d: Accepted condition %v", step.v1, step.v2, cond)
		}
		want := map[string]int{"api-v1": 20 * step.v1 / 100, "api-v2": 20 * step.v2 / 100}
		for name, n := range want {
			if n == 0 {
				delete(want, name)
			}
		}
		if got := tally(20); !equal(got, want) {
			t.Fatalf("after kubectl apply of a %d/%d split: %v, want %v", step.v1, step.v2, got, want)
		}
	}
	out := k.Kubectl("get", "destinationrule", "api", "-n", "default", "-o", "jsonpath={.status.conditions[0].type}={.status.conditions[0].status}")
	if out != "Accepted=True" {
		t.Errorf("DestinationRule api status: %q", out)
	}

	// A VirtualService Sigil refuses: Accepted=False, the reason, and
	// the message sigil apply prints, naming the field; nothing of it is
	// stored.
	k.Apply(refusedVS)
	cond := waitAccepted(t, k, vsGVR, "refused")
	if cond["status"] != "False" || cond["reason"] != "Invalid" ||
		!strings.Contains(cond["message"].(string), `field "statPrefix" is not supported by Sigil`) ||
		!strings.Contains(cond["message"].(string), "spec.http[0].match[0].statPrefix") {
		t.Fatalf("refused VirtualService's condition: %v", cond)
	}
	var st struct {
		Status struct {
			Conditions []struct {
				Type, Status, Reason, Message string
				ObservedGeneration            int64
			}
			ObservedGeneration int64
		}
	}
	if err := json.Unmarshal([]byte(k.Kubectl("get", "virtualservice", "refused", "-n", "default", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Status.Conditions) != 1 || st.Status.Conditions[0].Reason != "Invalid" || st.Status.ObservedGeneration != 1 || st.Status.Conditions[0].ObservedGeneration != 1 {
		t.Errorf("kubectl get -o json status: %+v", st.Status)
	}
	resp, err := http.Get(m.Dashboard + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`sigil_server_kubernetes_objects{accepted="false",kind="VirtualService"} 1`, `sigil_server_kubernetes_objects{accepted="true",kind="VirtualService"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if rs, err := admin.ListConfig(t.Context(), "virtualservices"); err != nil || len(rs) != 1 || rs[0].Name != "api" || !strings.HasPrefix(rs[0].Origin, "kubernetes/") {
		t.Errorf("stored virtualservices: %+v (%v), want api from Kubernetes only", rs, err)
	}

	// Deleting the VirtualService removes its route: both versions
	// answer again.
	k.Kubectl("delete", "virtualservice", "api", "-n", "default")
	m.Server.WaitFor(`"msg":"configuration deleted".*"actor":"kubernetes"`, 30*time.Second)
	if rs, err := admin.ListConfig(t.Context(), "virtualservices"); err != nil || len(rs) != 0 {
		t.Fatalf("VirtualServices stored after kubectl delete: %+v (%v)", rs, err)
	}
	waitBoth()
}

func equal(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// waitAccepted waits for the object name of gvr in default to have a
// status on its current generation, and returns its Accepted condition.
func waitAccepted(t *testing.T, k *harness.Kube, gvr schema.GroupVersionResource, name string) map[string]any {
	t.Helper()
	var accepted map[string]any
	k.WaitObject(t, gvr, "default", name, "Accepted condition on the current generation", 30*time.Second, func(u *unstructured.Unstructured) bool {
		gen, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		var ok bool
		accepted, ok = harness.ObjectCondition(u.Object, "Accepted", "status", "conditions")
		return ok && gen == u.GetGeneration()
	})
	return accepted
}

// waitSynced waits until the server sees n sidecars and none is behind
// its configuration.
func waitSynced(t *testing.T, admin *adminv1.AdminClient, n int) {
	t.Helper()
	// The server's own view: there is no push to wait on from outside.
	harness.Eventually(t, "sidecars in sync", 20*time.Second, func() error {
		ps, err := admin.ListProxies(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		stale := 0
		for _, p := range ps {
			if p.Stale {
				stale++
			}
		}
		if stale > 0 || len(ps) < n {
			return fmt.Errorf("%d of %d sidecars stale, want %d in sync: %+v", stale, len(ps), n, ps)
		}
		return nil
	})
}

// gatewayCRD returns the standard channel's HTTPRoute CRD of Gateway API
// v1.6.3 from the module cache, or "" when it is not there.
func gatewayCRD() string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		cache, _ := exec.Command("go", "env", "GOMODCACHE").Output()
		dir = filepath.Join(strings.TrimSpace(string(cache)), "sigs.k8s.io", "gateway-api@v1.6.3")
	}
	path := filepath.Join(dir, "config", "crd", "standard", "gateway.networking.k8s.io_httproutes.yaml")
	if _, err := os.Stat(path); err != nil {
		return ""
	}
	return path
}

// TestConfigFromCRDsInstalledLater starts sigil-server with --kubernetes
// on an API server without any of the kinds' CRDs, then installs them:
// the server starts watching each kind once its CRD is established, with
// no restart. With Gateway API's HTTPRoute CRD (from the module cache),
// an HTTPRoute attached to a Service gets a status.parents entry of
// Sigil's controller for it, on its generation.
func TestConfigFromCRDsInstalledLater(t *testing.T) {
	k := harness.StartKube(t)
	k.Namespace("sigil-system", nil)                                                              // the server publishes its trust bundle there (sigil install creates it)
	m := harness.StartMesh(t, "--kubernetes", "--kubeconfig", k.Kubeconfig, "--webhook-bind", "") // no webhook: its fixed port clashes with other tests' servers
	m.Server.WaitFor(`"msg":"kubernetes part started","part":"configuration"`, 30*time.Second)

	if out, err := k.KubectlStdin(deploy.CRDs(), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply of deploy/crds: %v: %s", err, out)
	}
	k.Kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/virtualservices.networking.istio.io")
	k.Apply(apiVS(50, 50))
	if cond := waitAccepted(t, k, vsGVR, "api"); cond["status"] != "True" {
		t.Fatalf("VirtualService applied after its CRD was installed: Accepted condition %v", cond)
	}

	crd := gatewayCRD()
	if crd == "" {
		t.Log("SKIPPED the HTTPRoute part: no sigs.k8s.io/gateway-api v1.6.3 in the module cache")
		return
	}
	k.Kubectl("apply", "--server-side", "-f", crd)
	k.Kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/httproutes.gateway.networking.k8s.io")
	m.Server.WaitFor(`"msg":"kubernetes configuration: watching".*"kind":"HTTPRoute.gateway.networking.k8s.io"`, 90*time.Second)
	k.Apply(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules:
  - backendRefs: [{name: api, port: 80}]
`)
	if conds := waitRouteParent(t, k, "api"); conds["Accepted"]["status"] != "True" || conds["ResolvedRefs"]["status"] != "True" {
		t.Errorf("HTTPRoute api: conditions %v, want Accepted=True, ResolvedRefs=True", conds)
	}

	// A route Sigil takes whose backendRef it cannot send to (a
	// ConfigMap) is Accepted=True, and says ResolvedRefs=False with
	// Gateway API's reason, as package gatewayapi judges it.
	k.Apply(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-configmap, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules:
  - backendRefs: [{group: "", kind: ConfigMap, name: api, port: 80}]
`)
	waitRouteParent(t, k, "api-configmap")
	_, conds := kubectlRouteConditions(t, k, "api-configmap")
	got := map[string]string{}
	for typ, c := range conds {
		got[typ] = string(c.Status) + "/" + c.Reason
	}
	if got["Accepted"] != "True/Accepted" || got["ResolvedRefs"] != "False/InvalidKind" {
		t.Errorf("HTTPRoute api-configmap (kubectl get -o json): conditions %v, want Accepted=True/Accepted, ResolvedRefs=False/InvalidKind", got)
	}
}

// waitRouteParent waits up to 30 s for HTTPRoute default/name to have a
// status.parents entry of Sigil's controller on its generation, and
// returns that entry's conditions by type.
func waitRouteParent(t *testing.T, k *harness.Kube, name string) map[string]map[string]any {
	t.Helper()
	routes := schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	var byType map[string]map[string]any
	k.WaitObject(t, routes, "default", name, "status.parents entry of sigil.dev/mesh", 30*time.Second, func(u *unstructured.Unstructured) bool {
		parents, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
		for _, p := range parents {
			pm, _ := p.(map[string]any)
			if pm["controllerName"] != "sigil.dev/mesh" {
				continue
			}
			byType = map[string]map[string]any{}
			conds, _ := pm["conditions"].([]any)
			for _, c := range conds {
				cm, _ := c.(map[string]any)
				if typ, _ := cm["type"].(string); typ != "" {
					byType[typ] = cm
				}
			}
			if a := byType["Accepted"]; a != nil && a["observedGeneration"] == u.GetGeneration() {
				t.Logf("HTTPRoute %s: Accepted=%v reason %v: %v", name, a["status"], a["reason"], a["message"])
				return true
			}
		}
		return false
	})
	return byType
}
