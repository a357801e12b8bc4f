package kube

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type syncedFunc func() bool

func (f syncedFunc) HasSynced() bool { return f() }

// TestWaitSyncedNamesWhatItLists: the one wait every part uses returns
// once synced, and otherwise names what it lists, with the RBAC hint
// when its bound passed (a refused list is retried for ever).
func TestWaitSyncedNamesWhatItLists(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		limit   time.Duration
		synced  bool
		wantErr []string // substrings; nil: no error
	}{
		{"synced", context.Background(), time.Second, true, nil},
		{"bound passed", context.Background(), 150 * time.Millisecond, false, []string{"kube: listing pods", "deadline exceeded", "RBAC"}},
		{"stopped", cancelled, time.Second, false, []string{"kube: listing pods", "context canceled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := WaitSyncedWithin(tt.ctx, tt.limit, syncedFunc(func() bool { return tt.synced }), "pods")
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("err %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q lacks %q", err, w)
				}
			}
			if tt.ctx == cancelled && !errors.Is(err, context.Canceled) {
				t.Errorf("err %v does not wrap context.Canceled", err)
			}
		})
	}
}

// TestSlimKeepsWhatThePartsRead: the shared informers' transform keeps
// of a Pod the fields discovery and automatic identity read, and drops
// the rest and every object's managedFields.
func TestSlimKeepsWhatThePartsRead(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop", UID: "u1", ResourceVersion: "7", Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{"big": strings.Repeat("x", 1024)}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec:   corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"},
	}
	got, err := Slim(pod)
	if err != nil {
		t.Fatal(err)
	}
	p := got.(*corev1.Pod)
	if p.Name != "web-0" || p.Namespace != "shop" || p.UID != "u1" || p.ResourceVersion != "7" || p.Labels["app"] != "web" ||
		p.Spec.NodeName != "node-a" || p.Spec.ServiceAccountName != "web" || p.Status.Phase != corev1.PodRunning {
		t.Errorf("a field a part reads was dropped: %+v", p)
	}
	if len(p.Annotations) != 0 || len(p.ManagedFields) != 0 || len(p.Spec.Containers) != 0 || p.Status.PodIP != "" {
		t.Errorf("fields no part reads were kept: %+v", p)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"sigil.dev/inject": "enabled"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
	if got, _ := Slim(ns); len(got.(*corev1.Namespace).ManagedFields) != 0 || got.(*corev1.Namespace).Labels["sigil.dev/inject"] != "enabled" {
		t.Errorf("namespace after Slim: %+v", got)
	}
}
