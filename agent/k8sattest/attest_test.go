package k8sattest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/selector"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

func testPod(uid, node string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0", UID: types.UID(uid), Labels: map[string]string{"app": "web", "version": "v1"}},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: "web"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// startPods runs the informer of node over a fake clientset holding objs.
func startPods(t *testing.T, node string, objs ...*corev1.Pod) (*Pods, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset()
	for _, o := range objs {
		if _, err := client.CoreV1().Pods(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods, err := NewPods(client, node)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := pods.Start(ctx)
	t.Cleanup(func() { cancel(); <-done })
	if err := pods.Synced(ctx); err != nil {
		t.Fatal(err)
	}
	return pods, client
}

// writeCgroup makes PROC-ROOT/<pid>/cgroup.
func writeCgroup(t *testing.T, root string, pid int, content string) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func strs(sels []selector.Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

func TestK8sAttestorSelectors(t *testing.T) {
	const otherUID = "11111111-2222-3333-4444-555555555555"
	const endedUID = "aaaaaaaa-2222-3333-4444-555555555555"
	withStatus := func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{
			{Name: "sidecar", ContainerID: "containerd://" + otherCID},
			{Name: "app", ContainerID: "containerd://" + testCID},
		}
	}
	ended := func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }
	named := func(n string) func(*corev1.Pod) { return func(p *corev1.Pod) { p.Name = n } }
	pods, _ := startPods(t, "node-a",
		testPod(testUID, "node-a", withStatus),
		testPod(otherUID, "node-b", named("web-1")),
		testPod(endedUID, "node-a", ended, named("job-0")),
	)
	root := t.TempDir()
	cg := func(uid, cid string) string {
		return "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uid + ".slice/cri-containerd-" + cid + ".scope\n"
	}
	writeCgroup(t, root, 100, cg(testUIDu, testCID))
	writeCgroup(t, root, 101, cg(testUIDu, "f"+testCID[1:]))
	writeCgroup(t, root, 102, cg("11111111_2222_3333_4444_555555555555", testCID))
	writeCgroup(t, root, 103, "0::/system.slice/sshd.service\n")
	writeCgroup(t, root, 104, cg("aaaaaaaa_2222_3333_4444_555555555555", testCID))
	a := New(root, pods, 50*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))

	base := []string{"k8s:ns:shop", "k8s:pod-label:app:web", "k8s:pod-label:version:v1", "k8s:pod-name:web-0", "k8s:pod-uid:" + testUID, "k8s:sa:web"}
	for _, tc := range []struct {
		name string
		pid  int32
		want []string
	}{
		{"pod on this node, container status matches", 100, append([]string{"k8s:container-name:app"}, base...)},
		{"no container status matches: no container-name", 101, base},
		{"pod on another node: none", 102, nil},
		{"host process: none", 103, nil},
		{"ended pod: none", 104, nil},
		{"no cgroup file: none", 999, nil},
		{"pid 0: none", 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strs(a.Attest(context.Background(), tc.pid))
			want := strs(selector.Sort(mustParse(t, tc.want)))
			if !slices.Equal(got, want) {
				t.Fatalf("got %v\nwant %v", got, want)
			}
		})
	}
}

func mustParse(t *testing.T, ss []string) []selector.Selector {
	t.Helper()
	out, err := selector.ParseAll(ss)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestK8sAttestorDefaultServiceAccount(t *testing.T) {
	p := testPod(testUID, "node-a", func(p *corev1.Pod) { p.Spec.ServiceAccountName = ""; p.Labels = nil })
	got := strs(Selectors(p, testCID))
	want := []string{"k8s:ns:shop", "k8s:pod-name:web-0", "k8s:pod-uid:" + testUID, "k8s:sa:default"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// A pod's first call can come before the informer has the pod: the
// attestation waits for it rather than answering without k8s selectors.
func TestK8sAttestorWaitsForInformer(t *testing.T) {
	pods, client := startPods(t, "node-a")
	root := t.TempDir()
	writeCgroup(t, root, 100, "0::/kubepods/pod"+testUID+"/"+testCID+"\n")
	a := New(root, pods, 30*time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	got := make(chan []selector.Selector, 1)
	go func() { got <- a.Attest(context.Background(), 100) }()
	if _, err := client.CoreV1().Pods("shop").Create(context.Background(), testPod(testUID, "node-a"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case sels := <-got:
		if !slices.Contains(strs(sels), "k8s:pod-uid:"+testUID) {
			t.Fatalf("got %v", strs(sels))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("attestation never saw the pod")
	}
	// A caller gone before the pod shows up gets nothing, at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	writeCgroup(t, root, 101, "0::/kubepods/pod"+"bbbbbbbb-2222-3333-4444-555555555555"+"/"+testCID+"\n")
	if sels := a.Attest(ctx, 101); sels != nil {
		t.Fatalf("got %v", strs(sels))
	}
}
