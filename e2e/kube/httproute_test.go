package kube

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/gatewayapi"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// apiRoute is an HTTPRoute attached to the Service api (GAMMA): requests
// with x-canary: yes go to the Service api-v2, the rest split v1:v2
// between the Services api-v1 and api-v2.
func apiRoute(v1, v2 int) string {
	return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules:
  - matches: [{headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: api-v2, port: 80}]
  - backendRefs:
    - {name: api-v1, port: 80, weight: ` + strconv.Itoa(v1) + `}
    - {name: api-v2, port: 80, weight: ` + strconv.Itoa(v2) + `}
`
}

// TestHTTPRouteFromKubectlChangesRouting installs Gateway API's standard
// HTTPRoute CRD (v1.6.3, from the module cache) on a real API server,
// runs sigil-server with --kubernetes, and shows that `kubectl apply` of
// an HTTPRoute attached to the Service api changes routing through real
// sidecars: a 0/100 then a 100/0 split between the Services api-v1 and
// api-v2 moves every request, a header match overrides the split, the
// route's status.parents says Accepted=True, and `kubectl delete` of the
// route gives api's traffic back to api itself.
//
// No kubelet runs, and the identities are not the point here: the
// sidecars run as plain-host processes, their agents attested with join
// tokens and their identities from registration entries; the three
// backends (api, api-v1, api-v2) register their endpoints through their
// agent, as in the plain-host Gateway API test.
func TestHTTPRouteFromKubectlChangesRouting(t *testing.T) {
	crd := gatewayCRD()
	if crd == "" {
		t.Skip("SKIP: no sigs.k8s.io/gateway-api v1.6.3 in the module cache")
	}
	k := harness.StartKube(t)
	k.Kubectl("apply", "--server-side", "-f", crd)
	k.Kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/httproutes.gateway.networking.k8s.io")

	// The server publishes its trust bundle in sigil-system (sigil install
	// creates it); no webhook: its fixed port clashes with other tests' servers.
	k.Namespace("sigil-system", nil)
	m := harness.StartMesh(t, "--kubernetes", "--kubeconfig", k.Kubeconfig, "--webhook-bind", "")
	m.Server.WaitFor(`"msg":"kubernetes configuration: watching".*"kind":"HTTPRoute.gateway.networking.k8s.io"`, 60*time.Second)
	uid := strconv.Itoa(os.Getuid())
	td := spiffeid.RequireTrustDomainFromString(harness.TrustDomain)
	backends := []string{"api", "api-v1", "api-v2"}
	for node, sa := range map[string]string{"node-web": "web", "node-api": "api"} {
		id, err := naming.WorkloadID(td, "default", sa)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"--selector", "unix:uid:" + uid}
		if sa == "api" {
			for _, svc := range backends { // one identity serves the three Services
				args = append(args, "--service", svc)
			}
		}
		m.Entry(node, id.String(), args...)
	}
	webAgent, apiAgent := m.StartAgent("node-web"), m.StartAgent("node-api")
	policyDir := allowAllPolicy(t, m.Dir)
	for _, svc := range backends {
		_, app := harness.StartApp(t, svc)
		harness.StartProxy(t, apiAgent, svc, app, policyDir)
	}
	_, webApp := harness.StartApp(t, "web")
	web := harness.StartProxy(t, webAgent, "web", webApp, policyDir)
	proxyURL, _ := url.Parse("http://" + web.Outbound)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	admin := adminv1.NewAdminClient(adminv1.AdminSocket(m.DataDir))

	// tally sends n requests to api through web's sidecar (with the
	// header hdr when not empty), once every sidecar runs the server's
	// config, and counts the answers by the app that gave them.
	tally := func(n int, canary string) map[string]int {
		t.Helper()
		var hdr http.Header
		if canary != "" {
			hdr = http.Header{"X-Canary": {canary}}
		}
		return countAnswers(t, admin, client, len(backends)+1, n, hdr)
	}
	// waitOnly waits up to 30 s until 20 requests in a row are all
	// answered by want.
	waitOnly := func(what, want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := tally(20, "")
			if equal(got, map[string]int{want: 20}) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: 20 requests to api answered %v, want all by %s", what, got, want)
			}
		}
	}
	waitOnly("without an HTTPRoute", "api")

	for _, step := range []struct {
		v1, v2 int
		want   string
	}{{0, 100, "api-v2"}, {100, 0, "api-v1"}} {
		k.Apply(apiRoute(step.v1, step.v2))
		waitRouteParent(t, k, "api")
		gen, conds := kubectlRouteConditions(t, k, "api")
		if c := conds["Accepted"]; c.Status != metav1.ConditionTrue || c.ObservedGeneration != gen {
			t.Fatalf("HTTPRoute api %d/%d (kubectl get -o json): conditions of %s %+v, want Accepted=True on generation %d",
				step.v1, step.v2, gatewayapi.ControllerName, conds, gen)
		}
		// The status is written once the server holds the route; the
		// sidecars follow (tally waits for them).
		if got, want := tally(20, ""), map[string]int{step.want: 20}; !equal(got, want) {
			t.Fatalf("after kubectl apply of a %d/%d HTTPRoute: %v, want %v", step.v1, step.v2, got, want)
		}
		if got, want := tally(10, "yes"), map[string]int{"api-v2": 10}; !equal(got, want) {
			t.Fatalf("%d/%d HTTPRoute, x-canary: yes: %v, want %v", step.v1, step.v2, got, want)
		}
	}

	// Deleting the route gives api's traffic back to api.
	k.Kubectl("delete", "httproute", "api", "-n", "default")
	m.Server.WaitFor(`"msg":"configuration deleted".*"actor":"kubernetes"`, 30*time.Second)
	waitOnly("after kubectl delete of the HTTPRoute", "api")
	if got, want := tally(10, "yes"), map[string]int{"api": 10}; !equal(got, want) {
		t.Fatalf("after kubectl delete, x-canary: yes: %v, want %v", got, want)
	}
}

// kubectlRouteConditions reads HTTPRoute default/name with kubectl get
// -o json, and returns its metadata.generation and the conditions, by
// type, of its status.parents entry of Sigil's controller.
func kubectlRouteConditions(t *testing.T, k *harness.Kube, name string) (int64, map[string]metav1.Condition) {
	t.Helper()
	var route struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Status   struct {
			Parents []struct {
				ControllerName string             `json:"controllerName"`
				Conditions     []metav1.Condition `json:"conditions"`
			} `json:"parents"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(k.Kubectl("get", "httproute", name, "-n", "default", "-o", "json")), &route); err != nil {
		t.Fatal(err)
	}
	conds := map[string]metav1.Condition{}
	for _, p := range route.Status.Parents {
		if p.ControllerName != string(gatewayapi.ControllerName) {
			continue
		}
		for _, c := range p.Conditions {
			conds[c.Type] = c
		}
	}
	return route.Metadata.Generation, conds
}
