package kube

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/gatewayapi"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// moduleDir is a module's directory in the module cache, downloading it
// through the Go module proxy if needed; the test is skipped without it.
func moduleDir(t *testing.T, mod string) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", mod).Output()
	var m struct{ Dir string }
	if err != nil || json.Unmarshal(out, &m) != nil || m.Dir == "" {
		t.Skipf("SKIP: module %s not available here: %v", mod, err)
	}
	return m.Dir
}

// The Gateway API mesh conformance suite cannot run here: it deploys
// echo Deployments and waits for their pods to be Ready, then execs into
// them to send requests, and no kubelet runs (see docs/kubernetes.md,
// "Gateway API"). What it can do against the real API server is what
// this test does: Gateway API's own standard-channel CRDs (v1.6.3, with
// their CEL validation) installed, every route manifest of the suite's
// tests/mesh applied with kubectl, read back as the API server defaulted
// them, read by gatewayapi as the CRD watcher hands them over (the
// object's JSON), translated, and the status.parents Sigil computes
// written through the status subresource, which the CRD's schema checks.
// A route with a filter Sigil does not enforce (CORS) is refused with
// Accepted=False naming the field.
func TestGatewayAPIConformanceManifestsOnAPIServer(t *testing.T) {
	k := harness.StartKube(t)
	gw := moduleDir(t, "sigs.k8s.io/gateway-api@v1.6.3")
	conf := moduleDir(t, "sigs.k8s.io/gateway-api/conformance@v1.6.3")
	for _, crd := range []string{"httproutes", "grpcroutes"} {
		k.Kubectl("apply", "--server-side", "-f", filepath.Join(gw, "config/crd/standard/gateway.networking.k8s.io_"+crd+".yaml"))
		k.Kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/"+crd+".gateway.networking.k8s.io")
	}
	k.Namespace("gateway-conformance-mesh", nil)
	k.Namespace("gateway-conformance-mesh-consumer", nil)
	manifests, _ := filepath.Glob(filepath.Join(conf, "tests/mesh/*.yaml"))
	if len(manifests) < 15 {
		t.Fatalf("%d manifests in %s", len(manifests), conf)
	}
	for _, m := range manifests {
		data, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		// The CRD's first reconcile can lag Established by a moment, and
		// no event says when the new kind is served.
		harness.Eventually(t, "kubectl apply "+filepath.Base(m), 30*time.Second, func() error {
			_, err := k.KubectlStdin(data, "apply", "-f", "-")
			return err
		})
	}
	k.Apply(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: refused-cors, namespace: gateway-conformance-mesh}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - filters: [{type: CORS, cors: {allowOrigins: ["https://a.example"]}}]
    backendRefs: [{name: echo-v1, port: 8080}]
`)

	gvrs := map[string]schema.GroupVersionResource{
		"HTTPRoute": {Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"},
		"GRPCRoute": {Group: "gateway.networking.k8s.io", Version: "v1", Resource: "grpcroutes"},
	}
	ctx := t.Context()
	accepted, refused := 0, 0
	for kind, gvr := range gvrs {
		list, err := k.Clients.Dynamic.Resource(gvr).Namespace("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			obj := &list.Items[i]
			js, err := obj.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			var sts []gatewayapi.ParentStatus
			rs, err := gatewayapi.Parse(js, kind+" "+obj.GetNamespace()+"/"+obj.GetName())
			if err != nil {
				if obj.GetName() != "refused-cors" {
					t.Errorf("%s %s/%s as the API server keeps it: %v", kind, obj.GetNamespace(), obj.GetName(), err)
					continue
				}
				if !strings.Contains(err.Error(), "spec.rules[0].filters[0].type") {
					t.Errorf("refusal does not name the field: %v", err)
				}
				sts = gatewayapi.Refused(kind, js, err)
				refused++
			} else {
				_, sts = gatewayapi.Translate(rs)
				accepted++
			}
			writeRouteStatus(t, k, gvr, obj, sts)
		}
	}
	if accepted < 15 || refused != 1 { // 21 documents, some of one name in two tests
		t.Fatalf("%d routes accepted, %d refused; want every conformance route and the CORS one", accepted, refused)
	}
	t.Logf("%d conformance routes read back from the API server accepted and translated; their status.parents written", accepted)

	got := k.Kubectl("get", "httproute", "-n", "gateway-conformance-mesh", "refused-cors",
		"-o", `jsonpath={.status.parents[0].controllerName} {.status.parents[0].conditions[?(@.type=="Accepted")].status} {.status.parents[0].conditions[?(@.type=="Accepted")].reason}`)
	if got != string(gatewayapi.ControllerName)+" False UnsupportedValue" {
		t.Errorf("refused route's status: %q", got)
	}
	got = k.Kubectl("get", "httproute", "-n", "gateway-conformance-mesh-consumer", "mesh-echo-add-header",
		"-o", `jsonpath={.status.parents[0].conditions[?(@.type=="Accepted")].status} {.status.parents[0].conditions[?(@.type=="ResolvedRefs")].status}`)
	if got != "True True" {
		t.Errorf("consumer route's status: %q", got)
	}
}

// writeRouteStatus writes sts as obj's status.parents through the status
// subresource, as the CRD watcher's writer does: lastTransitionTime is
// the writer's to set.
func writeRouteStatus(t *testing.T, k *harness.Kube, gvr schema.GroupVersionResource, obj *unstructured.Unstructured, sts []gatewayapi.ParentStatus) {
	t.Helper()
	now := metav1.Now()
	var parents []any
	for _, st := range sts {
		for i := range st.Status.Conditions {
			st.Status.Conditions[i].LastTransitionTime = now
		}
		js, err := json.Marshal(st.Status)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(js, &m); err != nil {
			t.Fatal(err)
		}
		parents = append(parents, m)
	}
	if len(parents) == 0 {
		return
	}
	if err := unstructured.SetNestedSlice(obj.Object, parents, "status", "parents"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Clients.Dynamic.Resource(gvr).Namespace(obj.GetNamespace()).UpdateStatus(t.Context(), obj, metav1.UpdateOptions{}); err != nil {
		t.Errorf("status of %s/%s refused by the CRD's schema: %v", obj.GetNamespace(), obj.GetName(), err)
	}
}
