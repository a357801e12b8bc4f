package podidentity

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/kube"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

const (
	agentA = "spiffe://example.org/sigil/agent/k8s_psat/c1/node-a"
	agentB = "spiffe://example.org/sigil/agent/k8s_psat/c1/node-b"
	uidWeb = "0b2c7e2a-1111-4c3d-9e8f-000000000001"
	uidJob = "0b2c7e2a-1111-4c3d-9e8f-000000000002"
)

func pod(name, uid, node, sa string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func TestSynthesizeEntryOfPod(t *testing.T) {
	now := time.Date(2026, 11, 30, 7, 0, 0, 500, time.UTC)
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		want    registry.Entry
		none    bool
		refused bool
	}{
		{name: "bound pod", pod: pod("web-0", uidWeb, "node-a", "web"), want: registry.Entry{
			ID: "k8s-pod-" + uidWeb, SPIFFEID: "spiffe://example.org/ns/shop/sa/web", ParentID: agentA, Source: registry.SourceK8s, CreatedAt: now.Truncate(time.Second),
		}},
		{name: "no service account is default", pod: pod("web-0", uidWeb, "node-a", ""), want: registry.Entry{
			ID: "k8s-pod-" + uidWeb, SPIFFEID: "spiffe://example.org/ns/shop/sa/default", ParentID: agentA, Source: registry.SourceK8s, CreatedAt: now.Truncate(time.Second),
		}},
		{name: "not bound yet", pod: pod("web-0", uidWeb, "", "web"), none: true},
		{name: "succeeded", pod: func() *corev1.Pod {
			p := pod("job-0", uidJob, "node-a", "web")
			p.Status.Phase = corev1.PodSucceeded
			return p
		}(), none: true},
		{name: "failed", pod: func() *corev1.Pod {
			p := pod("job-0", uidJob, "node-a", "web")
			p.Status.Phase = corev1.PodFailed
			return p
		}(), none: true},
		{name: "uid the selector cannot carry", pod: pod("web-0", "a:b", "node-a", "web"), none: true, refused: true},
		{name: "node name no agent ID can hold", pod: pod("web-0", uidWeb, "node/a", "web"), none: true, refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, ok, err := Synthesize(td, "c1", tc.pod, now)
			if (err != nil) != tc.refused {
				t.Fatalf("err = %v, want refused %v", err, tc.refused)
			}
			if ok == tc.none {
				t.Fatalf("ok = %v", ok)
			}
			if tc.none {
				return
			}
			if len(e.Selectors) != 1 || e.Selectors[0].String() != "k8s:pod-uid:"+uidWeb {
				t.Fatalf("selectors %v", e.Selectors)
			}
			e.Selectors = nil
			if e.ID != tc.want.ID || e.SPIFFEID != tc.want.SPIFFEID || e.ParentID != tc.want.ParentID || e.Source != tc.want.Source || !e.CreatedAt.Equal(tc.want.CreatedAt) || e.X509TTL != 0 || e.JWTTTL != 0 {
				t.Fatalf("got %+v\nwant %+v", e, tc.want)
			}
		})
	}
}

// watched is an Index over a fake clientset, its OnChange calls counted
// and signalled.
type watched struct {
	*Index
	changes atomic.Int64
	changed chan struct{}
}

func index(t *testing.T) (*watched, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset()
	w := &watched{changed: make(chan struct{}, 100)}
	now := time.Date(2026, 11, 30, 7, 0, 0, 0, time.UTC)
	factory := kube.NewInformers(client)
	x, err := New(factory, Options{TrustDomain: td, Cluster: "c1", OnChange: func() { w.changes.Add(1); w.changed <- struct{}{} }, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	w.Index = x
	ctx, cancel := context.WithCancel(context.Background())
	x.Start(ctx)
	t.Cleanup(func() { cancel(); factory.Shutdown() })
	if err := x.Synced(ctx); err != nil {
		t.Fatal(err)
	}
	return w, client
}

// eventually waits, change by change, for cond.
func (w *watched) eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-w.changed:
		case <-timeout:
			t.Fatalf("never: %s", what)
		}
	}
}

func ids(es []registry.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func TestPodIdentityFollowsPods(t *testing.T) {
	x, client := index(t)
	changes := &x.changes
	ctx := context.Background()
	pods := client.CoreV1().Pods("shop")

	// A pod bound to node-a: node-a's agent has its entry, node-b's none.
	web, err := pods.Create(ctx, pod("web-0", uidWeb, "node-a", "web"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x.eventually(t, "entry of web-0 under node-a", func() bool { return len(x.Entries(agentA)) == 1 })
	if got := x.Entries(agentB); len(got) != 0 {
		t.Fatalf("node-b's agent got %v", ids(got))
	}
	if e, ok := x.Entry("k8s-pod-" + uidWeb); !ok || e.ParentID != agentA {
		t.Fatalf("Entry = %+v, %v", e, ok)
	}
	if n := changes.Load(); n != 1 {
		t.Fatalf("%d changes after one pod", n)
	}

	// A status update changes no entry and wakes no agent.
	web.Status.PodIP = "10.0.0.7"
	if web, err = pods.UpdateStatus(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// An unbound pod, then bound to node-b: only node-b's agent gets it.
	job, err := pods.Create(ctx, pod("job-0", uidJob, "", "batch"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	job.Spec.NodeName = "node-b"
	if _, err := pods.Update(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	x.eventually(t, "entry of job-0 under node-b", func() bool { return len(x.Entries(agentB)) == 1 })
	if n := changes.Load(); n != 2 {
		t.Fatalf("%d changes, want 2 (the status update and the unbound pod change nothing)", n)
	}
	if got := ids(x.Entries(agentA)); len(got) != 1 || got[0] != "k8s-pod-"+uidWeb {
		t.Fatalf("node-a's agent: %v", got)
	}

	// Moved (a pod is never re-bound, but a replacement object may be):
	// the entry follows the node.
	web.Spec.NodeName = "node-b"
	if _, err := pods.Update(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	x.eventually(t, "web-0 under node-b", func() bool { return len(x.Entries(agentA)) == 0 && len(x.Entries(agentB)) == 2 })

	// Ended: gone.
	job.Status.Phase = corev1.PodSucceeded
	if _, err := pods.UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	x.eventually(t, "job-0 gone once it succeeded", func() bool { return len(x.Entries(agentB)) == 1 })

	// Deleted: gone.
	if err := pods.Delete(ctx, "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	x.eventually(t, "web-0 gone once deleted", func() bool { return len(x.Entries(agentB)) == 0 })
	if _, ok := x.Entry("k8s-pod-" + uidWeb); ok {
		t.Fatal("deleted pod's entry still found by ID")
	}
}
