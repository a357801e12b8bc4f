package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/k8s/podidentity"
	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// The agent API reads the pods' synthesized entries beside the
// registry's: a pod's node agent is streamed and may have signed its
// ns/sa identity, the agent of another node is refused it as it is any
// entry not its own, and hand-made entries keep working.
func TestAutoIdentityEntriesOnlyForThePodsNode(t *testing.T) {
	const (
		nodeA = "spiffe://example.org/sigil/agent/k8s_psat/cluster/node-a"
		nodeB = "spiffe://example.org/sigil/agent/k8s_psat/cluster/node-b"
		uid   = "6f0e2c1a-0000-4000-8000-00000000beef"
	)
	ctx := context.Background()
	s, store := storeServer(t)
	s.cfg.td = spiffeid.RequireTrustDomainFromString("example.org")
	hand, err := store.CreateEntry(ctx, registry.Entry{SPIFFEID: "spiffe://example.org/ns/shop/sa/admin", ParentID: nodeA,
		Selectors: []selector.Selector{selector.K8s(selector.K8sServiceAccount, "admin")}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0", UID: uid},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "web"},
	})
	woke := s.changes.Changed()
	factory := kube.NewInformers(client)
	idx, err := podidentity.New(factory, podidentity.Options{TrustDomain: s.cfg.td, Cluster: "cluster", OnChange: s.changes.Notify, Now: s.now})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	idx.Start(runCtx)
	t.Cleanup(func() { cancel(); factory.Shutdown() })
	if err := idx.Synced(runCtx); err != nil {
		t.Fatal(err)
	}
	s.pods.Store(idx)
	select {
	case <-woke:
	default:
		t.Fatal("the pod's entry woke no Sync stream")
	}

	a, err := s.agentEntries(ctx, nodeA)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 2 || a[0].ID != hand.ID || a[1].ID != podidentity.EntryIDPrefix+uid || a[1].SPIFFEID != "spiffe://example.org/ns/shop/sa/web" {
		t.Fatalf("node-a's entries: %+v", a)
	}
	if b, err := s.agentEntries(ctx, nodeB); err != nil || len(b) != 0 {
		t.Fatalf("node-b's entries: %+v, %v", b, err)
	}
	idA, idB := spiffeid.RequireFromString(nodeA), spiffeid.RequireFromString(nodeB)
	if e, err := s.entryFor(ctx, idA, podidentity.EntryIDPrefix+uid); err != nil || e.ParentID != nodeA {
		t.Fatalf("entryFor(node-a) = %+v, %v", e, err)
	}
	if e, err := s.entryFor(ctx, idA, hand.ID); err != nil || e.ID != hand.ID {
		t.Fatalf("hand-made entry: %+v, %v", e, err)
	}
	if _, err := s.entryFor(ctx, idB, podidentity.EntryIDPrefix+uid); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("entryFor(node-b) = %v, want PermissionDenied", err)
	}
	entries := map[string]registry.Entry{}
	for _, e := range mustEntries(t, s, nodeB) {
		entries[e.ID] = e
	}
	if _, _, err := s.signEntry(entries, idB, nil); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("signEntry for node-b = %v, want PermissionDenied", err)
	}
}

func mustEntries(t *testing.T, s *Server, agent string) []registry.Entry {
	t.Helper()
	es, err := s.agentEntries(context.Background(), agent)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// With --k8s-auto-identity=false the part starts no informer and the
// agent API reads the registry's entries only.
func TestAutoIdentityOff(t *testing.T) {
	s, store := storeServer(t)
	s.cfg.Kubernetes = KubeConfig{Enabled: true, DisableAutoIdentity: true}
	var wg sync.WaitGroup
	// s.kube is nil: a part that reached for the API server would panic.
	if err := s.podsPart().start(context.Background(), &wg); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if s.pods.Load() != nil {
		t.Fatal("automatic identity on with --k8s-auto-identity=false")
	}
	const agent = "spiffe://example.org/sigil/agent/k8s_psat/cluster/node-a"
	if _, err := store.CreateEntry(context.Background(), registry.Entry{SPIFFEID: "spiffe://example.org/ns/shop/sa/web", ParentID: agent,
		Selectors: []selector.Selector{selector.K8s(selector.K8sServiceAccount, "web")}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if es := mustEntries(t, s, agent); len(es) != 1 || es[0].Source != registry.SourceLocal {
		t.Fatalf("entries %+v", es)
	}
}
