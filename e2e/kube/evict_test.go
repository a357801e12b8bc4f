package kube

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/k8s/evictions"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// syncAs opens the agent API's Sync stream on the replica at addr as the
// agent holding svid, and returns the first answer's error (nil when the
// replica serves it).
func syncAs(t *testing.T, addr string, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	t.Helper()
	tlsCfg := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeMemberOf(bundle.TrustDomain()))
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := agentv1.NewAgentClient(conn).Sync(ctx, &agentv1.SyncRequest{})
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

// refusedAsEvicted fails the test unless err is the refusal of an SVID
// from before the agent's eviction.
func refusedAsEvicted(t *testing.T, where string, err error) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "was evicted at") || !strings.Contains(err.Error(), "sigil-server-b") {
		t.Fatalf("%s: the old SVID got %v; want PermissionDenied naming the eviction by sigil-server-b", where, err)
	}
}

// TestAgentEvictionHoldsOnEveryReplica runs two sigil-server replicas
// against the real API server, with the RBAC `sigil install` grants, and a
// k8s_psat agent whose streams are on the leader (a). The agent is evicted
// on the follower (b), through b's admin socket: the eviction goes to the
// sigil-agent-evictions ConfigMap, a deletes its own record and cuts the
// agent's streams, and the agent's old SVID is refused on a as on b; the
// agent re-attests by itself with its projected token, and its new SVID is
// served by both. Then b restarts and still refuses the old SVID. No
// kubelet runs: the test creates the agent's Pod object and starts the
// replicas and the agent as processes itself.
func TestAgentEvictionHoldsOnEveryReplica(t *testing.T) {
	k := harness.StartKube(t)
	k.Apply(harness.MustRun(t, "sigil", "install", "--trust-domain", harness.TrustDomain))
	serverKubeconfig := k.KubeconfigFor("sigil-system", "sigil-server")
	flags := func(pod string) []string {
		return []string{"--kubernetes", "--kubeconfig", serverKubeconfig, "--k8s-namespace", "sigil-system", "--k8s-pod-name", pod, "--k8s-cluster", psatCluster,
			"--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "500ms",
			"--webhook-bind", ""}
	}
	a := harness.StartMesh(t, flags("sigil-server-a")...)
	a.Server.WaitFor(`"msg":"leading: this replica signs"`, 30*time.Second)
	b := harness.StartMesh(t, flags("sigil-server-b")...)
	b.Server.WaitFor(`"msg":"new leader".*"leader":"sigil-server-a_`+regexp.QuoteMeta(a.Addr)+`"`, 30*time.Second)
	b.Server.WaitFor(`"msg":"kubernetes part started","part":"agent evictions"`, 30*time.Second)

	pod := k.Pod("sigil-system", "sigil-agent-ev7q2", "sigil-agent", "node-a", map[string]string{"app": "sigil-agent"})
	agent := startPSATAgent(t, a, k, "a", "node-a", k.TokenFile("sigil-system", "sigil-agent", "sigil-server", pod))
	agent.WaitFor(`"msg":"sigil-agent running"`, 30*time.Second)
	id := psatAgentID(t, "node-a")
	dataDir := filepath.Join(a.Dir, "agent-a", "data")
	old, err := x509svid.Load(filepath.Join(dataDir, "agent_svid.pem"), filepath.Join(dataDir, "agent_svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString(harness.TrustDomain), a.BundleFile())
	if err != nil {
		t.Fatal(err)
	}
	// Before the eviction b adopts the agent on its SVID.
	if err := syncAs(t, b.Addr, old, bundle); err != nil {
		t.Fatalf("the follower refused the agent's SVID before any eviction: %v", err)
	}

	b.Admin("agent", "evict", "--spiffe-id", id)
	cm, err := k.Clients.Core.CoreV1().ConfigMaps("sigil-system").Get(context.Background(), evictions.DefaultName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the eviction is not in the API server: %v", err)
	}
	var rec evictions.Eviction
	if err := json.Unmarshal([]byte(cm.Data[evictions.Key(id)]), &rec); err != nil || rec.Agent != id || rec.Replica != "sigil-server-b" {
		t.Fatalf("ConfigMap %s: entry %s = %q (%v); want agent %s evicted by sigil-server-b", evictions.DefaultName, evictions.Key(id), cm.Data[evictions.Key(id)], err, id)
	}

	// The leader, which attested the agent, applies the eviction made on
	// the follower: its record goes (audited), its streams are cut, the
	// old SVID is refused.
	a.Server.WaitFor(`"msg":"agent evicted by another replica","agent_id":"`+regexp.QuoteMeta(id)+`".*"evicted_by":"sigil-server-b"`, 30*time.Second)
	refusedAsEvicted(t, "the leader", syncAs(t, a.Addr, old, bundle))
	refusedAsEvicted(t, "the follower", syncAs(t, b.Addr, old, bundle))
	trail, err := os.ReadFile(filepath.Join(a.DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`"type":"agent.evicted".*"evicted_by":"sigil-server-b"`).Match(trail) {
		t.Error("the leader's audit trail has no agent.evicted naming sigil-server-b")
	}

	// The agent finds itself refused and attests again with its projected
	// token; the new SVID is good on both replicas.
	agent.WaitFor(`"msg":"the server refused this agent \(evicted\?\)`, 30*time.Second)
	agent.WaitFor(`"msg":"node re-attested","agent_id":"`+regexp.QuoteMeta(id)+`"`, 60*time.Second)
	fresh, err := x509svid.Load(filepath.Join(dataDir, "agent_svid.pem"), filepath.Join(dataDir, "agent_svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !fresh.Certificates[0].NotBefore.After(rec.At) {
		t.Fatalf("the re-attested SVID's NotBefore %s is not after the eviction %s", fresh.Certificates[0].NotBefore, rec.At)
	}
	for _, m := range []*harness.Mesh{a, b} {
		if err := syncAs(t, m.Addr, fresh, bundle); err != nil {
			t.Fatalf("replica %s refused the re-attested SVID: %v", m.Addr, err)
		}
	}

	// A restart remembers: the evictions are read before any agent call
	// is answered.
	b.Server.Signal(syscall.SIGTERM)
	b.Server.Wait(15 * time.Second)
	b.StartServer()
	b.Server.WaitFor(`"msg":"kubernetes part started","part":"agent evictions"`, 30*time.Second)
	refusedAsEvicted(t, "the follower after a restart", syncAs(t, b.Addr, old, bundle))
	if err := syncAs(t, b.Addr, fresh, bundle); err != nil {
		t.Fatalf("the restarted follower refused the re-attested SVID: %v", err)
	}

	// An eviction does not keep a k8s_psat node out (it re-attested
	// above); a ban does, on every replica, until it is lifted.
	banAndUnban(t, a, b, agent, id, fresh, bundle)
}

// banAndUnban bans the agent id (holding svid) on the follower b: both
// replicas refuse its SVID, and its re-attestations with its projected
// token are refused by the leader a (the only signer), audited; after
// agent unban (on a) it re-attests by itself and both serve it again.
func banAndUnban(t *testing.T, a, b *harness.Mesh, agent *harness.Proc, id string, svid *x509svid.SVID, bundle *x509bundle.Bundle) {
	t.Helper()
	b.Admin("agent", "ban", "--spiffe-id", id)
	for _, m := range []*harness.Mesh{a, b} {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			err := syncAs(t, m.Addr, svid, bundle)
			if status.Code(err) == codes.PermissionDenied && strings.Contains(err.Error(), "is banned") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s: a banned agent's SVID got %v; want PermissionDenied naming the ban", m.Addr, err)
			}
		}
	}
	agent.WaitFor(`"msg":"re-attestation refused.*is banned`, 60*time.Second)
	a.Server.WaitFor(`"msg":"agent attestation refused".*"reason":"agent `+regexp.QuoteMeta(id)+` is banned`, 30*time.Second)
	trail, err := os.ReadFile(filepath.Join(a.DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`"type":"agent.refused".*is banned`).Match(trail) {
		t.Error("the leader's audit trail has no agent.refused for the banned agent's attestation")
	}
	attested := strings.Count(agent.Output(), `"msg":"node re-attested"`)

	a.Admin("agent", "unban", "--spiffe-id", id)
	for deadline := time.Now().Add(60 * time.Second); strings.Count(agent.Output(), `"msg":"node re-attested"`) == attested; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the agent did not re-attest within 60 s of agent unban")
		}
	}
	dataDir := filepath.Join(a.Dir, "agent-a", "data")
	again, err := x509svid.Load(filepath.Join(dataDir, "agent_svid.pem"), filepath.Join(dataDir, "agent_svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*harness.Mesh{a, b} {
		if err := syncAs(t, m.Addr, again, bundle); err != nil {
			t.Fatalf("replica %s refused the SVID re-attested after unban: %v", m.Addr, err)
		}
	}
}
