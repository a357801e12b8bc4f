package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
)

// podWorkloadEnv, set to a Workload API socket, makes this test binary
// the process of a pod (see podProcess): it waits for a line on stdin,
// then fetches its X.509-SVIDs, retrying as go-spiffe's X509Source does
// (the pod's entry may reach the agent after the pod starts), for up to
// podDeadlineEnv (a duration), printing each refusal and the SVIDs got.
const (
	podWorkloadEnv = "SIGIL_E2E_POD_WORKLOAD"
	podDeadlineEnv = "SIGIL_E2E_POD_DEADLINE"
)

func init() {
	// Runs before TestMain, so the pod's process builds no binaries.
	if socket := os.Getenv(podWorkloadEnv); socket != "" {
		os.Exit(runPodWorkload(socket, os.Getenv(podDeadlineEnv)))
	}
}

// runPodWorkload is a go-spiffe client as an app in a pod runs it.
func runPodWorkload(socket, deadline string) int {
	if _, err := fmt.Fscanln(os.Stdin); err != nil && err.Error() != "unexpected newline" {
		fmt.Fprintln(os.Stderr, "waiting for go:", err)
		return 1
	}
	d, err := time.ParseDuration(deadline)
	if err != nil {
		fmt.Fprintln(os.Stderr, podDeadlineEnv+":", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+socket))
		if err == nil {
			for _, s := range x.SVIDs {
				fmt.Fprintf(os.Stderr, "svid %s\n", s.ID)
			}
			fmt.Fprintln(os.Stderr, "done")
			return 0
		}
		code := status.Code(err)
		if u := errors.Unwrap(err); u != nil {
			code = status.Code(u)
		}
		fmt.Fprintf(os.Stderr, "no identity: code=%s: %v\n", code, err)
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "gave up")
			return 0
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// podProcess starts the process of pod, as kubelet would in the pod's
// container, against the agent's Workload API socket. No kubelet or
// container runtime runs here: the test starts the process itself and
// writes PROC-ROOT/<pid>/cgroup in the fake proc root the agent reads
// (--proc-root) as the systemd cgroup driver would name the container
// (kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope), before
// letting the process call the agent.
func podProcess(t *testing.T, procRoot, socket string, pod *corev1.Pod, deadline time.Duration) *harness.Proc {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), podWorkloadEnv+"="+socket, podDeadlineEnv+"="+deadline.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := harness.StartCmd(t, "pod "+pod.Namespace+"/"+pod.Name, cmd)
	dir := filepath.Join(procRoot, strconv.Itoa(p.PID()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	uid := strings.ReplaceAll(string(pod.UID), "-", "_")
	cid := fmt.Sprintf("%064x", p.PID())
	cgroup := "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uid + ".slice/cri-containerd-" + cid + ".scope\n"
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, "\n"); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	return p
}

// podAgentID is the k8s_psat agent ID of node in cluster.
func podAgentID(t *testing.T, cluster, node string) string {
	t.Helper()
	id, err := naming.K8sPSATAgentID(spiffeid.RequireTrustDomainFromString(harness.TrustDomain), cluster, node)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

// TestAutoIdentityPodOnNode: a Pod object bound to node-a gets
// spiffe://example.org/ns/shop/sa/web from node-a's agent with no entry
// created; a pod bound to node-b that asks node-a's agent gets no
// identity, and gets its own from node-b's agent; a hand-made entry with
// k8s selectors matches through the agent's attestor too; the audit trail
// records each issuance. The agents attest with real projected tokens
// (TokenReview) and run with only the RBAC their service account is
// granted: pods list and watch (field-selected to their node).
// No scheduler or kubelet runs: the test creates the Pod objects, starts
// the pods' processes itself and names their pods in a fake proc root's
// cgroup files (podProcess).
func TestAutoIdentityPodOnNode(t *testing.T) {
	const cluster = "e2e"
	k := harness.StartKube(t)
	k.Apply(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: sigil-agent-pods}
rules:
- {apiGroups: [""], resources: [pods], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: sigil-agent-pods}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: sigil-agent-pods}
subjects:
- {kind: ServiceAccount, namespace: sigil-system, name: sigil-agent}
`)
	agentKubeconfig := k.KubeconfigFor("sigil-system", "sigil-agent")
	m := harness.StartMesh(t, "--kubernetes", "--kubeconfig", k.Kubeconfig, "--k8s-cluster", cluster)
	// Both parts this test needs serve once their lines are out (the
	// server starts its parts one by one, in an order not fixed here).
	m.Server.WaitFor(`"msg":"kubernetes part started","part":"automatic identity"`, 60*time.Second)
	m.Server.WaitFor(`"msg":"kubernetes part started","part":"node attestation \(k8s_psat\)"`, 60*time.Second)

	startAgent := func(node string) (socket, procRoot string) {
		t.Helper()
		agentPod := k.Pod("sigil-system", "sigil-agent-"+node, "sigil-agent", node, map[string]string{"app": "sigil-agent"})
		dir := filepath.Join(m.Dir, "agent-"+node)
		procRoot = filepath.Join(dir, "proc")
		if err := os.MkdirAll(procRoot, 0o755); err != nil {
			t.Fatal(err)
		}
		socket = filepath.Join(dir, "agent.sock")
		a := harness.Start(t, "sigil-agent", "run", "--server", m.Addr, "--trust-bundle", m.BundleFile(),
			"--kubernetes", "--kubeconfig", agentKubeconfig, "--node-name", node,
			"--k8s-psat-token-file", k.TokenFile("sigil-system", "sigil-agent", "sigil-server", agentPod),
			"--proc-root", procRoot, "--data-dir", filepath.Join(dir, "data"), "--socket", socket, "--admin", "127.0.0.1:0")
		if got := a.WaitFor(`"msg":"node attested","agent_id":"([^"]+)"`, 60*time.Second)[1]; got != podAgentID(t, cluster, node) {
			t.Fatalf("agent attested as %s", got)
		}
		a.WaitFor(`"msg":"sigil-agent running"`, 60*time.Second)
		return socket, procRoot
	}
	socketA, procA := startAgent("node-a")

	web := k.Pod("shop", "web-0", "web", "node-a", map[string]string{"app": "web"})
	api := k.Pod("shop", "api-0", "api", "node-a", map[string]string{"app": "api", "tier": "backend"})
	batch := k.Pod("shop", "batch-0", "batch", "node-b", nil)
	// A hand-made entry on k8s selectors, beside the automatic identity.
	m.Admin("entry", "create", "--parent-id", podAgentID(t, cluster, "node-a"), "--spiffe-id", "spiffe://example.org/ns/shop/sa/backend",
		"--selector", "k8s:ns:shop", "--selector", "k8s:pod-label:tier:backend")

	// svids waits for the pod's process to end its fetch and returns
	// the SVIDs it got.
	svids := func(p *harness.Proc) []string {
		t.Helper()
		p.WaitFor(`^(done|gave up)$`, 90*time.Second)
		var ids []string
		for _, g := range regexp.MustCompile(`(?m)^svid (\S+)$`).FindAllStringSubmatch(p.Output(), -1) {
			ids = append(ids, g[1])
		}
		return ids
	}
	wantSVIDs := func(p *harness.Proc, want ...string) {
		t.Helper()
		if got := svids(p); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("SVIDs %v, want %v\n%s", got, want, p.Output())
		}
	}
	wantSVIDs(podProcess(t, procA, socketA, web, time.Minute), "spiffe://example.org/ns/shop/sa/web")
	wantSVIDs(podProcess(t, procA, socketA, api, time.Minute), "spiffe://example.org/ns/shop/sa/api", "spiffe://example.org/ns/shop/sa/backend")

	// A pod bound to node-b whose process asks node-a's agent: node-a's
	// informer never has it, so no k8s selector and no identity, however
	// long it asks (each ask waits out the attestor's 10 s for the pod).
	stray := podProcess(t, procA, socketA, batch, 12*time.Second)
	if got := svids(stray); len(got) != 0 || !strings.Contains(stray.Output(), "no identity: code=PermissionDenied") {
		t.Fatalf("a node-b pod asking node-a's agent got %v:\n%s", got, stray.Output())
	}
	// Its own node's agent gives it its identity.
	socketB, procB := startAgent("node-b")
	wantSVIDs(podProcess(t, procB, socketB, batch, time.Minute), "spiffe://example.org/ns/shop/sa/batch")

	// No entry was created for the automatic identities.
	if out := m.Admin("entry", "list"); strings.Contains(out, "sa/web") || strings.Contains(out, "sa/batch") {
		t.Fatalf("entries were created:\n%s", out)
	}
	trail, err := os.ReadFile(filepath.Join(m.DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range []*corev1.Pod{web, api, batch} {
		re := regexp.MustCompile(`"type":"x509svid.issued","actor":"` + regexp.QuoteMeta(podAgentID(t, cluster, pod.Spec.NodeName)) +
			`","subject":"spiffe://example.org/ns/shop/sa/` + pod.Spec.ServiceAccountName + `","details":\{"entry_id":"k8s-pod-` + string(pod.UID) + `"`)
		if !re.Match(trail) {
			t.Fatalf("audit trail lacks the issuance to %s/%s by its node's agent", pod.Namespace, pod.Name)
		}
	}
}
