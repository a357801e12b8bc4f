package kube

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/deploy"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// rootPolicy is a Policy object namespace/name whose Rego sets allow to
// allow.
func rootPolicy(namespace, name, allow string) string {
	return `apiVersion: security.sigil.dev/v1
kind: Policy
metadata: {name: ` + name + `, namespace: ` + namespace + `}
spec:
  modules:
    authz.rego: |
      package sigil.authz

      default allow := false

      allow := ` + allow + "\n"
}

// TestPolicyRootNamespaceFollowsK8sNamespace: with the server's
// --k8s-namespace mesh, a Policy in mesh is mesh-wide (the root
// namespace is Sigil's own, as Istio's is its control plane's): a sidecar
// of namespace default with no Policy of its own puts mesh's in force,
// never the one in sigil-system, which is then a namespace like any
// other. The server streams the root through the agent to the sidecar.
// No kubelet runs: the agent (join token), app and sidecar are
// processes started here.
func TestPolicyRootNamespaceFollowsK8sNamespace(t *testing.T) {
	k := harness.StartKube(t)
	if out, err := k.KubectlStdin(deploy.CRDs(), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply of deploy/crds: %v: %s", err, out)
	}
	k.Kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/policies.security.sigil.dev")
	k.Namespace("mesh", nil)
	k.Namespace("sigil-system", nil)
	m := harness.StartMesh(t, "--kubernetes", "--kubeconfig", k.Kubeconfig, "--k8s-namespace", "mesh", "--webhook-bind", "")
	m.Server.WaitFor(`"msg":"kubernetes configuration: watching".*"kind":"Policy.security.sigil.dev"`, 30*time.Second)

	policies := schema.GroupVersionResource{Group: "security.sigil.dev", Version: "v1", Resource: "policies"}
	for _, p := range []struct{ namespace, name, allow string }{
		{"sigil-system", "deny-all", "false"},
		{"mesh", "allow-all", "true"},
	} {
		k.Apply(rootPolicy(p.namespace, p.name, p.allow))
		k.WaitObject(t, policies, p.namespace, p.name, "Policy "+p.namespace+"/"+p.name+" accepted", 30*time.Second, func(u *unstructured.Unstructured) bool {
			c, ok := harness.ObjectCondition(u.Object, "Accepted", "status", "conditions")
			return ok && c["status"] == "True"
		})
	}

	id, err := naming.WorkloadID(spiffeid.RequireTrustDomainFromString(harness.TrustDomain), "default", "api")
	if err != nil {
		t.Fatal(err)
	}
	m.Entry("node1", id.String(), "--selector", "unix:uid:"+strconv.Itoa(os.Getuid()))
	agent := m.StartAgent("node1")
	_, app := harness.StartApp(t, "api")
	sidecar := harness.StartProxy(t, agent, "api", app, "") // no --policy: the enforced policy is a resource's
	sidecar.WaitFor(`"msg":"policy loaded","revision":"`+regexp.QuoteMeta("mesh/allow-all@"), 30*time.Second)
	if out := sidecar.Output(); strings.Contains(out, "sigil-system/deny-all@") {
		t.Fatalf("the sidecar put sigil-system's Policy in force with --k8s-namespace mesh:\n%s", out)
	}
}
