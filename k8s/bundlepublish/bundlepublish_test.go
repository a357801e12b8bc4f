package bundlepublish

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const root1, root2 = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n", "-----BEGIN CERTIFICATE-----\nAQ==\n-----END CERTIFICATE-----\n"

func TestPublish(t *testing.T) {
	existing := func(data map[string]string) []runtime.Object {
		return []runtime.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: DefaultName, Namespace: "ns"}, Data: data}}
	}
	for _, tc := range []struct {
		name    string
		objs    []runtime.Object
		bundle  string
		wrote   bool
		err     string
		verbs   []string // the writes made
		wantKey string
	}{
		{"created", nil, root1, true, "", []string{"create"}, root1},
		{"unchanged", existing(map[string]string{DefaultKey: root1}), root1, false, "", nil, root1},
		{"rotated", existing(map[string]string{DefaultKey: root1}), root1 + root2, true, "", []string{"update"}, root1 + root2},
		{"no data yet", existing(nil), root2, true, "", []string{"update"}, root2},
		{"empty bundle", nil, " \n", false, "bundle is empty", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset(tc.objs...)
			p := &Publisher{Client: cs, Namespace: "ns", Bundle: func() []byte { return []byte(tc.bundle) }}
			wrote, err := p.Publish(context.Background())
			if wrote != tc.wrote || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Publish = %v, %v; want %v, error with %q", wrote, err, tc.wrote, tc.err)
			}
			var verbs []string
			for _, a := range cs.Actions() {
				if a.GetVerb() != "get" {
					verbs = append(verbs, a.GetVerb())
				}
			}
			if strings.Join(verbs, ",") != strings.Join(tc.verbs, ",") {
				t.Errorf("writes %q, want %q", verbs, tc.verbs)
			}
			if tc.wantKey == "" {
				return
			}
			cm, err := cs.CoreV1().ConfigMaps("ns").Get(context.Background(), DefaultName, metav1.GetOptions{})
			if err != nil || cm.Data[DefaultKey] != tc.wantKey {
				t.Fatalf("ConfigMap = %v, %v; want %s = %q", cm, err, DefaultKey, tc.wantKey)
			}
		})
	}
}

// TestRunRetriesAndStops: a failed publication is retried at the next
// interval, and Run returns once its context ends.
func TestRunRetriesAndStops(t *testing.T) {
	cs := fake.NewClientset()
	fails := 1
	cs.PrependReactor("create", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if fails > 0 {
			fails--
			return true, nil, errors.New("apiserver unavailable")
		}
		return false, nil, nil
	})
	p := &Publisher{Client: cs, Namespace: "ns", Bundle: func() []byte { return []byte(root1) }, Interval: time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	w, err := cs.CoreV1().ConfigMaps("ns").Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	select {
	case <-w.ResultChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the bundle was never published after a failure")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
