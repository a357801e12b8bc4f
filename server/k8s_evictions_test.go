package server

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/k8s/evictions"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const evictedAgent = "spiffe://example.org/sigil/agent/k8s_psat/prod/node-a"

// evictionServer is a psatServer on Kubernetes whose evictions ConfigMap
// lives in a fake API server that refuses writes when refuse is set, with
// one agent record attested at attested.
func evictionServer(t *testing.T, attested time.Time, refuse error) (*psatServer, *fake.Clientset) {
	t.Helper()
	p := newPSATServer(t, true)
	p.cfg.Kubernetes.Namespace, p.cfg.Kubernetes.Leader.PodName = "sigil-system", "sigil-server-b"
	cs := fake.NewClientset()
	if refuse != nil {
		for _, verb := range []string{"create", "update"} {
			cs.PrependReactor(verb, "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, refuse })
		}
	}
	p.ha = &haState{evictions: evictions.New(cs, "sigil-system", evictions.DefaultName)}
	a := registry.Agent{SPIFFEID: evictedAgent, Attestor: "k8s_psat", Node: "node-a", Serial: "0a", ExpiresAt: attested.Add(time.Hour), AttestedAt: attested}
	if err := p.store.SaveAgent(context.Background(), a, attested); err != nil {
		t.Fatal(err)
	}
	return p, cs
}

func evictRequest(id string) *http.Request {
	r := httptest.NewRequest(http.MethodDelete, "/v1/agents/x", nil)
	r.SetPathValue("id", id)
	return r
}

// TestEvictionFailsClosedOnKubernetes: when the shared record cannot be
// written the eviction fails with a 503 naming why, this replica's record
// stays, and the audit trail shows the intent aborted.
func TestEvictionFailsClosedOnKubernetes(t *testing.T) {
	p, _ := evictionServer(t, time.Now().Add(-time.Minute), errors.New(`configmaps "sigil-agent-evictions" is forbidden`))
	_, err := p.evictAgent(evictRequest(evictedAgent))
	var apiErr *adminv1.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable || !strings.Contains(apiErr.Message, "not shared with the other replicas") || !strings.Contains(apiErr.Message, "forbidden") {
		t.Fatalf("evict with the ConfigMap not writable: %v; want a 503 saying the eviction was not shared, and why", err)
	}
	if _, err := p.store.GetAgent(context.Background(), evictedAgent); err != nil {
		t.Fatalf("the agent's record went though the eviction failed: %v", err)
	}
	aborted := p.audited(audit.ActionAborted)
	if len(p.audited(audit.AgentEvicted)) != 1 || len(aborted) != 1 || !strings.Contains(aborted[0].Details[audit.DetailReason], "forbidden") {
		t.Fatalf("audit: intents %v, aborted %v; want the eviction's intent aborted with the reason", p.audited(audit.AgentEvicted), aborted)
	}
}

// TestEvictionSharedThenRefusedEverywhere: an eviction lands in the
// ConfigMap before the record goes; until the replica has read the
// evictions every agent call is refused; once read, an SVID from before
// the eviction is refused and one from after is not.
func TestEvictionSharedThenRefusedEverywhere(t *testing.T) {
	before := time.Now().Add(-time.Minute)
	p, cs := evictionServer(t, before, nil)
	if _, err := p.evictAgent(evictRequest(evictedAgent)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.store.GetAgent(context.Background(), evictedAgent); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("record after the eviction: %v", err)
	}
	cm, err := cs.CoreV1().ConfigMaps("sigil-system").Get(context.Background(), evictions.DefaultName, metav1.GetOptions{})
	if err != nil || !strings.Contains(cm.Data[evictions.Key(evictedAgent)], `"replica":"sigil-server-b"`) {
		t.Fatalf("ConfigMap after the eviction: %v, %v", cm, err)
	}
	if ev := p.audited(audit.AgentEvicted); len(ev) != 1 || ev[0].Details["evicted_by"] != "sigil-server-b" {
		t.Fatalf("audit: %v; want agent.evicted naming this replica", ev)
	}

	id := spiffeid.RequireFromString(evictedAgent)
	old := &x509.Certificate{NotBefore: before}
	if err := p.refuseEvicted(id, old); status.Code(err) != codes.Unavailable {
		t.Fatalf("a call before the evictions were read: %v; want Unavailable", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, err := p.ha.evictions.Watch(ctx, func([]evictions.Eviction) {}, func(error) {})
	defer func() { cancel(); <-done }()
	if err != nil {
		t.Fatal(err)
	}
	e, _ := p.ha.evictions.Lookup(evictedAgent)
	for _, tc := range []struct {
		name      string
		notBefore time.Time
		want      codes.Code
	}{
		{"issued before", before, codes.PermissionDenied},
		{"NotBefore at the eviction", e.At, codes.PermissionDenied},
		{"issued after", e.At.Add(time.Millisecond), codes.OK},
	} {
		if err := p.refuseEvicted(id, &x509.Certificate{NotBefore: tc.notBefore}); status.Code(err) != tc.want {
			t.Errorf("%s: %v; want %s", tc.name, err, tc.want)
		}
	}
	other := spiffeid.RequireFromString("spiffe://example.org/sigil/agent/k8s_psat/prod/node-b")
	if err := p.refuseEvicted(other, old); err != nil {
		t.Errorf("another agent: %v", err)
	}
}

// TestEvictionFromAnotherReplicaApplied: a replica deletes its own record
// of an agent another replica evicted, audited with the evicting replica,
// unless the agent attested again after the eviction.
func TestEvictionFromAnotherReplicaApplied(t *testing.T) {
	at := time.Now().Truncate(time.Second).Add(-time.Minute + 500*time.Millisecond)
	for _, tc := range []struct {
		name     string
		attested time.Time
		deleted  bool
	}{
		{"attested before", at.Add(-time.Hour), true},
		{"attested the same second, before", at.Add(-400 * time.Millisecond), true},
		{"attested again after", at.Add(11 * time.Second), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := evictionServer(t, tc.attested, nil)
			p.evictedElsewhere(context.Background(), []evictions.Eviction{{Agent: evictedAgent, At: at, Replica: "sigil-server-a"}})
			_, err := p.store.GetAgent(context.Background(), evictedAgent)
			if deleted := errors.Is(err, registry.ErrNotFound); deleted != tc.deleted {
				t.Fatalf("record deleted = %v (%v), want %v", deleted, err, tc.deleted)
			}
			ev := p.audited(audit.AgentEvicted)
			if tc.deleted && (len(ev) != 1 || ev[0].Details["evicted_by"] != "sigil-server-a" || ev[0].Actor != "kubernetes") {
				t.Fatalf("audit: %v; want agent.evicted by kubernetes naming sigil-server-a", ev)
			}
			if !tc.deleted && len(ev) != 0 {
				t.Fatalf("audit: %v; want nothing", ev)
			}
		})
	}
}
