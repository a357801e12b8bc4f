package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/agent/k8sattest"
	"github.com/sigil-mesh/sigil/agent/unixattest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// onePod is a PodSource of one pod.
type onePod struct{ pod *corev1.Pod }

func (o onePod) Wait(_ context.Context, uid string) (*corev1.Pod, bool) {
	return o.pod, string(o.pod.UID) == uid
}

// With --kubernetes a caller has both its unix and its pod's k8s
// selectors; without, the unix ones only.
func TestAttestorCombinesUnixAndK8s(t *testing.T) {
	const uid = "0b2c7e2a-1111-4c3d-9e8f-000000000001"
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "100"), 0o755); err != nil {
		t.Fatal(err)
	}
	cgroup := "0::/kubepods/besteffort/pod" + uid + "/" + "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961\n"
	if err := os.WriteFile(filepath.Join(root, "100", "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0", UID: uid}, Spec: corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "web"}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	info := unixattest.AuthInfo{PID: 100, UID: 4242, GID: 4242}
	strs := func(a attestor) []string {
		var out []string
		for _, s := range a.Attest(context.Background(), info) {
			out = append(out, s.String())
		}
		return out
	}
	same := func(unixattest.AuthInfo) error { return nil }
	with := strs(attestor{unix: &unixattest.Attestor{ProcRoot: root}, k8s: k8sattest.New(root, onePod{pod}, time.Second, log), sameProcess: same, log: log})
	for _, want := range []string{"unix:uid:4242", "unix:gid:4242", "k8s:ns:shop", "k8s:sa:web", "k8s:pod-uid:" + uid} {
		if !slices.Contains(with, want) {
			t.Errorf("with --kubernetes: %s missing from %v", want, with)
		}
	}
	if !slices.IsSorted(with) {
		t.Errorf("selectors not sorted: %v", with)
	}
	without := strs(attestor{unix: &unixattest.Attestor{ProcRoot: root}, sameProcess: same, log: log})
	if !slices.Equal(without, []string{"unix:gid:4242", "unix:uid:4242"}) {
		t.Errorf("without --kubernetes: %v", without)
	}
	// A pid that names another process than the one that connected (it
	// exited and the pid was reused) is no one: no selectors at all.
	gone := func(unixattest.AuthInfo) error { return unixattest.ErrProcessGone }
	if got := strs(attestor{unix: &unixattest.Attestor{ProcRoot: root}, k8s: k8sattest.New(root, onePod{pod}, time.Second, log), sameProcess: gone, log: log}); len(got) != 0 {
		t.Errorf("a reused pid attested as %v", got)
	}
}
