package evictions

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func configMap(data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: DefaultName, Namespace: ns}, Data: data}
}

// TestEvictionFutureTimeClamped: an entry dated past now+MaxFuture (a
// hand edit, or a clock far ahead) is read as made now, named as an
// error, still refuses the agent, and Prune rewrites it so that it is
// dropped in time rather than kept forever.
func TestEvictionFutureTimeClamped(t *testing.T) {
	const lifetime = time.Hour
	now := t0
	far := eviction("far", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	far.Until = far.At
	near := eviction("near", now.Add(MaxFuture-time.Second)) // within the margin: believed
	longUntil := eviction("long-until", now.Add(-time.Minute))
	longUntil.Until = now.Add(100 * 365 * 24 * time.Hour)
	data := map[string]string{Key(far.Agent): entry(t, far), Key(near.Agent): entry(t, near), Key(longUntil.Agent): entry(t, longUntil)}

	byID, errs := Parse(configMap(data), now)
	for _, tc := range []struct {
		name string
		got  Eviction
		want time.Time
	}{
		{"far future", byID[far.Agent], now},
		{"within MaxFuture", byID[near.Agent], near.At},
		{"only until far", byID[longUntil.Agent], longUntil.At},
	} {
		if !tc.got.At.Equal(tc.want) {
			t.Errorf("%s: read At %s, want %s", tc.name, tc.got.At, tc.want)
		}
	}
	if len(errs) != 1 || !errors.Is(errs[0], ErrFuture) || !strings.Contains(errs[0].Error(), "9999-01-01") {
		t.Errorf("Parse errors %v; want one ErrFuture naming the time written", errs)
	}

	client := fake.NewClientset(configMap(data))
	s := New(client, ns, DefaultName)
	if _, err := s.Prune(context.Background(), now, lifetime); err != nil {
		t.Fatal(err)
	}
	rewritten, _ := Parse(configMap(stored(t, client)), now)
	if e := rewritten[far.Agent]; !e.At.Equal(now) || !e.Until.Equal(now.Add(lifetime)) {
		t.Errorf("far entry after Prune: %+v; want At now and Until now+lifetime", e)
	}
	if e := rewritten[longUntil.Agent]; !e.Until.Equal(now.Add(lifetime)) {
		t.Errorf("far Until after Prune: %s; want now+lifetime", e.Until)
	}
	later := now.Add(lifetime + time.Minute)
	if n, err := s.Prune(context.Background(), later, lifetime); err != nil || n != 3 {
		t.Errorf("Prune past the lifetime: dropped %d, %v; want all 3", n, err)
	}
}

// TestBanKeptUntilUnban: a banned agent's entry survives Prune however
// old, a later eviction does not lift the ban, and only Unban does
// (leaving a plain eviction that Prune then drops).
func TestBanKeptUntilUnban(t *testing.T) {
	ctx := context.Background()
	const lifetime = time.Hour
	client := fake.NewClientset()
	s := New(client, ns, DefaultName)
	ban := eviction("banned", t0)
	ban.Banned = true
	if err := s.Record(ctx, ban); err != nil {
		t.Fatal(err)
	}
	later := eviction("banned", t0.Add(time.Minute))
	if err := s.Record(ctx, later); err != nil {
		t.Fatal(err)
	}
	year := t0.Add(365 * 24 * time.Hour)
	if n, err := s.Prune(ctx, year, lifetime); err != nil || n != 0 {
		t.Fatalf("Prune a year on: dropped %d, %v; want the ban kept", n, err)
	}
	e, ok, err := s.Fetch(ctx, ban.Agent, year)
	if err != nil || !ok || !e.Banned || !e.At.Equal(later.At) {
		t.Fatalf("Fetch after a later eviction: %+v, %v, %v; want banned, dated by the later eviction", e, ok, err)
	}
	if err := s.Unban(ctx, ban.Agent, year); err != nil {
		t.Fatal(err)
	}
	if err := s.Unban(ctx, ban.Agent, year); !errors.Is(err, ErrNotBanned) {
		t.Fatalf("second Unban: %v; want ErrNotBanned", err)
	}
	if e, ok, _ := s.Fetch(ctx, ban.Agent, year); !ok || e.Banned {
		t.Fatalf("after Unban: %+v, %v; want a plain eviction", e, ok)
	}
	if n, err := s.Prune(ctx, year, lifetime); err != nil || n != 1 {
		t.Fatalf("Prune after Unban: dropped %d, %v; want 1", n, err)
	}
}

// TestFetchReadsTheAPIServer: Fetch asks the API server, not the watched
// copy: it finds an entry written after the last watch, one under a
// hand-made key, nothing when the ConfigMap is absent, and an error
// (for the caller to fail closed) when the GET fails.
func TestFetchReadsTheAPIServer(t *testing.T) {
	ctx := context.Background()
	e := eviction("a", t0)
	moved := eviction("moved", t0)
	for _, tc := range []struct {
		name    string
		objects []runtime.Object
		agent   string
		getErr  error
		found   bool
	}{
		{"no ConfigMap", nil, e.Agent, nil, false},
		{"own key", []runtime.Object{configMap(map[string]string{Key(e.Agent): entry(t, e)})}, e.Agent, nil, true},
		{"hand-made key", []runtime.Object{configMap(map[string]string{"x": entry(t, moved)})}, moved.Agent, nil, true},
		{"another agent", []runtime.Object{configMap(map[string]string{Key(e.Agent): entry(t, e)})}, moved.Agent, nil, false},
		{"GET fails", nil, e.Agent, errors.New(`configmaps "sigil-agent-evictions" is forbidden`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(tc.objects...)
			if tc.getErr != nil {
				client.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tc.getErr })
			}
			got, ok, err := New(client, ns, DefaultName).Fetch(ctx, tc.agent, t0)
			if (err != nil) != (tc.getErr != nil) || ok != tc.found || (ok && got.Agent != tc.agent) {
				t.Fatalf("Fetch = %+v, %v, %v; want found %v, error %v", got, ok, err, tc.found, tc.getErr)
			}
			if err != nil && !strings.Contains(err.Error(), "forbidden") {
				t.Fatalf("error %v does not say why", err)
			}
		})
	}
}
