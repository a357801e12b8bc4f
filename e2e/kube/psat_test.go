package kube

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/k8s/psat"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// psatCluster is the --k8s-cluster of these tests. Their servers serve
// no injection webhook (--webhook-bind ""): its fixed default port would
// be shared by every test server on the machine.
const psatCluster = "e2e"

// psatAgentID is the k8s_psat agent ID of node in psatCluster.
func psatAgentID(t *testing.T, node string) string {
	t.Helper()
	id, err := naming.K8sPSATAgentID(spiffeid.RequireTrustDomainFromString(harness.TrustDomain), psatCluster, node)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// startPSATAgent starts sigil-agent as the DaemonSet's pod would run it:
// --kubernetes, the node from the downward API, the projected token in
// tokenFile; extra flags follow (a further --server). It does not wait:
// the caller waits for what it expects.
func startPSATAgent(t *testing.T, m *harness.Mesh, k *harness.Kube, name, node, tokenFile string, extra ...string) *harness.Proc {
	t.Helper()
	dir := filepath.Join(m.Dir, "agent-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return harness.Start(t, "sigil-agent", append([]string{"run", "--server", m.Addr, "--trust-bundle", m.BundleFile(),
		"--kubernetes", "--kubeconfig", k.Kubeconfig, "--node-name", node, "--k8s-psat-token-file", tokenFile,
		"--data-dir", filepath.Join(dir, "data"), "--socket", filepath.Join(dir, "agent.sock"), "--admin", "127.0.0.1:0"}, extra...)...)
}

// TestNodeAttestationPSAT: an agent attests with a real projected
// service-account token, checked by the real kube-apiserver's TokenReview
// API, and gets the k8s_psat agent ID of the node its pod is bound to; it
// re-attests with a fresh token after an eviction; tokens of the wrong
// audience, of a service account not allowed, or bound to no pod are
// refused, each with an error saying why. No kubelet runs: the test
// creates the agent's Pod object (bound to node-a), asks the TokenRequest
// API for the token kubelet would project, writes it where kubelet would,
// and starts the agent process itself.
func TestNodeAttestationPSAT(t *testing.T) {
	k := harness.StartKube(t)
	pod := k.Pod("sigil-system", "sigil-agent-7xk2p", "sigil-agent", "node-a", map[string]string{"app": "sigil-agent"})
	m := harness.StartMesh(t, "--kubernetes", "--kubeconfig", k.Kubeconfig, "--k8s-cluster", psatCluster, "--webhook-bind", "")
	m.Server.WaitFor(`"msg":"kubernetes part started","part":"node attestation \(k8s_psat\)"`, 30*time.Second)

	tokenFile := k.TokenFile("sigil-system", "sigil-agent", "sigil-server", pod)
	agent := startPSATAgent(t, m, k, "a", "node-a", tokenFile)
	got := agent.WaitFor(`"msg":"node attested","agent_id":"([^"]+)"`, 30*time.Second)[1]
	if want := psatAgentID(t, "node-a"); got != want {
		t.Fatalf("agent attested as %s, want %s", got, want)
	}
	agent.WaitFor(`"msg":"sigil-agent running"`, 30*time.Second)
	if out := m.Admin("agent", "list"); !strings.Contains(out, psatAgentID(t, "node-a")+"  node=node-a") {
		t.Fatalf("agent list does not show the k8s_psat agent on node-a:\n%s", out)
	}

	// Tokens are not single use, and the file is read afresh: after an
	// eviction the agent re-attests, by itself, with the token now in the
	// file (a fresh one, as kubelet's rotation leaves).
	fresh := k.Token("sigil-system", "sigil-agent", "sigil-server", pod)
	if err := os.WriteFile(tokenFile, []byte(fresh), 0o600); err != nil {
		t.Fatal(err)
	}
	m.Admin("agent", "evict", "--spiffe-id", psatAgentID(t, "node-a"))
	agent.WaitFor(`"msg":"node re-attested","agent_id":"`+regexp.QuoteMeta(psatAgentID(t, "node-a"))+`"`, 60*time.Second)

	// Refusals: each agent exits at start, the server's reason in its error.
	other := k.Pod("sigil-system", "intruder-0", "intruder", "node-b", nil)
	for _, tt := range []struct {
		name  string
		token string
		want  string
	}{
		{"wrong audience", k.Token("sigil-system", "sigil-agent", "vault", pod), `is invalid for the target audiences ["sigil-server"]`},
		{"service account not allowed", k.Token("sigil-system", "intruder", "sigil-server", other), `service account sigil-system:intruder is not allowed to attest nodes`},
		{"token bound to no pod", k.Token("sigil-system", "sigil-agent", "sigil-server", nil), "not bound to a pod"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(file, []byte(tt.token), 0o600); err != nil {
				t.Fatal(err)
			}
			a := startPSATAgent(t, m, k, strings.ReplaceAll(tt.name, " ", "-"), "node-b", file)
			if code := a.Wait(30 * time.Second); code == 0 {
				t.Fatalf("agent with a token of %s attested:\n%s", tt.name, a.Output())
			}
			if out := a.Output(); !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, tt.want) {
				t.Fatalf("agent's error does not say PermissionDenied and %q:\n%s", tt.want, out)
			}
		})
	}
	// An agent told another node than its pod's refuses the identity:
	// it would attest the workloads of a node it is not on.
	wrongNode := startPSATAgent(t, m, k, "wrong-node", "node-b", k.TokenFile("sigil-system", "sigil-agent", "sigil-server", pod))
	if code := wrongNode.Wait(30 * time.Second); code == 0 || !strings.Contains(wrongNode.Output(), `attested this agent as node "node-a"`) {
		t.Fatalf("agent with --node-name node-b and a pod on node-a: exit %d\n%s", code, wrongNode.Output())
	}
	if out := m.Admin("agent", "list"); strings.Contains(out, "node-b") {
		t.Fatalf("a refused token attested node-b:\n%s", out)
	}

	// The audit trail has each attestation and refusal, never a token.
	trail, err := os.ReadFile(filepath.Join(m.DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"agent.attested"`, `"attestor":"k8s_psat"`, `"pod":"sigil-system/sigil-agent-7xk2p"`, `"agent.refused"`, `"sa":"sigil-system:intruder"`} {
		if !strings.Contains(string(trail), want) {
			t.Fatalf("audit trail lacks %s", want)
		}
	}
	if strings.Contains(string(trail), fresh) || strings.Contains(string(trail), strings.Split(fresh, ".")[2]) {
		t.Fatal("a projected token is in the audit trail")
	}
}

// TestNodeAttestationPSATAfterExpiry: a server outage longer than the
// agent SVID's life leaves the agent with an expired SVID; when the server
// is back the agent re-attests by itself with the same projected token
// (not single use), with no one writing anything on the node. No kubelet
// runs: the test makes the agent's Pod object and its token itself.
func TestNodeAttestationPSATAfterExpiry(t *testing.T) {
	k := harness.StartKube(t)
	pod := k.Pod("sigil-system", "sigil-agent-0", "sigil-agent", "node-a", nil)
	m := harness.StartMesh(t, "--kubernetes", "--kubeconfig", k.Kubeconfig, "--k8s-cluster", psatCluster, "--webhook-bind", "", "--agent-x509-ttl", "10s")
	m.Server.WaitFor(`"msg":"kubernetes part started","part":"node attestation \(k8s_psat\)"`, 30*time.Second)
	agent := startPSATAgent(t, m, k, "a", "node-a", k.TokenFile("sigil-system", "sigil-agent", "sigil-server", pod))
	agent.WaitFor(`"msg":"sigil-agent running"`, 30*time.Second)

	m.Server.Stop()
	agent.WaitFor(`"level":"ERROR","msg":"agent cannot renew its identity: agent svid expired.*re-attests, which it does by itself with its projected token`, 30*time.Second)
	m.StartServer()
	agent.WaitFor(`"msg":"node re-attested","agent_id":"`+regexp.QuoteMeta(psatAgentID(t, "node-a"))+`"`, 30*time.Second)
}

// TestNodeAttestationPSATLeastPrivilege: what the server's service account
// needs for node attestation is tokenreviews create and pods get, no more
// (the RBAC deploy/ grants it): package k8s/psat, as that service account,
// attests a real bound token; and without the grant it fails closed, as
// unavailable, never accepted.
func TestNodeAttestationPSATLeastPrivilege(t *testing.T) {
	k := harness.StartKube(t)
	pod := k.Pod("sigil-system", "sigil-agent-0", "sigil-agent", "node-a", nil)
	token := k.Token("sigil-system", "sigil-agent", "sigil-server", pod)
	server, err := harness.KubeconfigClients(k.KubeconfigFor("sigil-system", "sigil-server"))
	if err != nil {
		t.Fatal(err)
	}
	a := psat.New(psat.NewClient(server.Core), psat.Config{})
	ctx := context.Background()
	if _, err := a.Attest(ctx, token); !errors.Is(err, psat.ErrUnavailable) || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("attest without RBAC: %v, want unavailable (forbidden)", err)
	}
	k.Apply(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: sigil-server-node-attestation}
rules:
- {apiGroups: [authentication.k8s.io], resources: [tokenreviews], verbs: [create]}
- {apiGroups: [""], resources: [pods], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: sigil-server-node-attestation}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: sigil-server-node-attestation}
subjects:
- {kind: ServiceAccount, namespace: sigil-system, name: sigil-server}
`)
	var res psat.Result
	// RBAC reaches the authorizer's cache shortly after the apply.
	harness.Eventually(t, "attestation with the RBAC applied", 30*time.Second, func() error {
		res, err = a.Attest(ctx, token)
		if errors.Is(err, psat.ErrUnavailable) {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("attest with tokenreviews create and pods get: %v", err)
	}
	want := psat.Result{ServiceAccount: psat.DefaultServiceAccount, PodName: pod.Name, PodUID: string(pod.UID), Node: "node-a"}
	if res != want {
		t.Fatalf("Attest = %+v, want %+v", res, want)
	}
	// The pod deleted: its token no longer attests anything.
	if err := k.Clients.Core.CoreV1().Pods("sigil-system").Delete(ctx, pod.Name, deleteNow()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attest(ctx, token); !errors.Is(err, psat.ErrRefused) {
		t.Fatalf("attest with the token of a deleted pod: %v, want refused", err)
	}
}

// deleteNow deletes with no grace period: no kubelet runs to finish a
// graceful deletion.
func deleteNow() metav1.DeleteOptions {
	zero := int64(0)
	return metav1.DeleteOptions{GracePeriodSeconds: &zero}
}
