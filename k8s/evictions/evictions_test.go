package evictions

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const ns = "sigil-system"

var (
	cmGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	t0    = time.Date(2026, 11, 30, 10, 0, 0, 123456789, time.UTC)
)

func agentID(node string) string { return "spiffe://example.org/sigil/agent/k8s_psat/c1/" + node }

func eviction(node string, at time.Time) Eviction {
	return Eviction{Agent: agentID(node), At: at, Replica: "sigil-server-b", Until: at.Add(time.Hour)}
}

func entry(t *testing.T, e Eviction) string {
	t.Helper()
	raw, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// stored reads the ConfigMap's data from the fake's tracker.
func stored(t *testing.T, client *fake.Clientset) map[string]string {
	t.Helper()
	cm, err := client.CoreV1().ConfigMaps(ns).Get(context.Background(), DefaultName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data
}

func TestKeyDerivation(t *testing.T) {
	keySyntax := regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
	seen := map[string]string{}
	for _, id := range []string{
		agentID("node-a"),
		agentID("node-b"),
		"spiffe://example.org/sigil/agent/join_token/node-a",
		"spiffe://example.org/sigil/agent/join_token/n%C3%A9",
		"spiffe://example.org/sigil/agent/join_token/" + strings.Repeat("x", 2000),
	} {
		k := Key(id)
		if !keySyntax.MatchString(k) || len(k) != 64 {
			t.Errorf("Key(%q) = %q: not a 64-character ConfigMap key", id, k)
		}
		if Key(id) != k {
			t.Errorf("Key(%q) is not deterministic", id)
		}
		if other, ok := seen[k]; ok {
			t.Errorf("Key(%q) = Key(%q)", id, other)
		}
		seen[k] = id
	}
}

// conflicting makes the fake answer the first n updates with a Conflict,
// each after another writer (another replica) has added its own eviction,
// as the API server does when a write lands between read and update.
func conflicting(t *testing.T, client *fake.Clientset, n int) {
	var mu sync.Mutex
	left := n
	client.PrependReactor("update", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if left == 0 {
			return false, nil, nil
		}
		left--
		obj, err := client.Tracker().Get(cmGVR, ns, DefaultName)
		if err != nil {
			return true, nil, err
		}
		cm := obj.(*corev1.ConfigMap).DeepCopy()
		other := eviction("other-"+string(rune('a'+left)), t0)
		cm.Data[Key(other.Agent)] = entry(t, other)
		if err := client.Tracker().Update(cmGVR, cm, ns); err != nil {
			return true, nil, err
		}
		return true, nil, apierrors.NewConflict(cmGVR.GroupResource(), DefaultName, errors.New("the object has been modified"))
	})
}

func TestRecordRetriesOnConflict(t *testing.T) {
	for _, tc := range []struct {
		name      string
		conflicts int
		wantErr   string
	}{
		{name: "no conflict", conflicts: 0},
		{name: "one conflict", conflicts: 1},
		{name: "conflicts up to the bound", conflicts: maxAttempts - 1},
		{name: "conflicts past the bound", conflicts: maxAttempts, wantErr: "another writer won 5 times in a row"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: DefaultName, Namespace: ns}, Data: map[string]string{}})
			conflicting(t, client, tc.conflicts)
			s := New(client, ns, DefaultName)
			e := eviction("node-a", t0)
			err := s.Record(context.Background(), e)
			data := stored(t, client)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Record: %v, want an error with %q", err, tc.wantErr)
				}
				if _, ok := data[Key(e.Agent)]; ok {
					t.Fatal("a failed Record wrote the eviction")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if data[Key(e.Agent)] != entry(t, e) {
				t.Fatalf("entry = %q, want %q", data[Key(e.Agent)], entry(t, e))
			}
			// The other writers' evictions survive the retries.
			if len(data) != 1+tc.conflicts {
				t.Fatalf("%d entries after %d conflicting writers, want %d: %v", len(data), tc.conflicts, 1+tc.conflicts, data)
			}
		})
	}
}

// Two replicas evicting on an empty cluster both create the ConfigMap; the
// loser of the create retries as an update.
func TestRecordCreateRace(t *testing.T) {
	client := fake.NewClientset()
	first := true
	client.PrependReactor("create", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !first {
			return false, nil, nil
		}
		first = false
		other := eviction("node-b", t0)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: DefaultName, Namespace: ns}, Data: map[string]string{Key(other.Agent): entry(t, other)}}
		if err := client.Tracker().Create(cmGVR, cm, ns); err != nil {
			return true, nil, err
		}
		return true, nil, apierrors.NewAlreadyExists(cmGVR.GroupResource(), DefaultName)
	})
	s := New(client, ns, DefaultName)
	if err := s.Record(context.Background(), eviction("node-a", t0)); err != nil {
		t.Fatal(err)
	}
	if data := stored(t, client); len(data) != 2 {
		t.Fatalf("entries %v, want node-a's and node-b's", data)
	}
}

func TestRecordKeepsTheLaterEviction(t *testing.T) {
	client := fake.NewClientset()
	s := New(client, ns, DefaultName)
	ctx := context.Background()
	later, earlier := eviction("node-a", t0.Add(time.Minute)), eviction("node-a", t0)
	for _, e := range []Eviction{later, earlier} {
		if err := s.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if got := stored(t, client)[Key(later.Agent)]; got != entry(t, later) {
		t.Fatalf("entry = %q, want the later eviction %q", got, entry(t, later))
	}
	if err := s.Record(ctx, Eviction{Agent: agentID("x")}); err == nil {
		t.Fatal("an eviction with no time was recorded")
	}
}

func TestRecordRefusedNearTheSizeLimit(t *testing.T) {
	big := map[string]string{"filler": strings.Repeat("x", MaxBytes-100)}
	client := fake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: DefaultName, Namespace: ns}, Data: big})
	s := New(client, ns, DefaultName)
	err := s.Record(context.Background(), eviction("node-a", t0))
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "--agent-x509-ttl") {
		t.Fatalf("Record into a full ConfigMap: %v, want ErrFull saying what to do", err)
	}
	if len(stored(t, client)) != 1 {
		t.Fatal("the refused eviction was written")
	}
	// Pruning makes room: the filler does not parse and goes.
	if n, err := s.Prune(context.Background(), t0, time.Hour); err != nil || n != 1 {
		t.Fatalf("Prune: %d, %v", n, err)
	}
	if err := s.Record(context.Background(), eviction("node-a", t0)); err != nil {
		t.Fatalf("Record after pruning: %v", err)
	}
}

func TestPruneDropsEvictionsNoSVIDCanMatch(t *testing.T) {
	const lifetime = time.Hour
	now := t0.Add(24 * time.Hour)
	fresh := eviction("fresh", now.Add(-time.Minute))
	old := eviction("old", now.Add(-lifetime-time.Second))
	longUntil := eviction("long-until", now.Add(-lifetime-time.Second))
	longUntil.Until = now.Add(time.Minute) // its agent's last SVID lives longer than this replica's TTL
	edge := eviction("edge", now.Add(-lifetime))
	wrongKey := eviction("wrong-key", now.Add(-time.Minute))
	data := map[string]string{
		Key(fresh.Agent): entry(t, fresh), Key(old.Agent): entry(t, old), Key(longUntil.Agent): entry(t, longUntil),
		Key(edge.Agent): entry(t, edge), "not-its-key": entry(t, wrongKey), "garbage": "{",
	}
	client := fake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: DefaultName, Namespace: ns}, Data: data})
	s := New(client, ns, DefaultName)
	n, err := s.Prune(context.Background(), now, lifetime)
	if err != nil {
		t.Fatal(err)
	}
	got := stored(t, client)
	for key, keep := range map[string]bool{
		Key(fresh.Agent): true, Key(old.Agent): false, Key(longUntil.Agent): true,
		Key(edge.Agent): true, "not-its-key": true, "garbage": false,
	} {
		if _, ok := got[key]; ok != keep {
			t.Errorf("entry %s kept = %v, want %v", key, ok, keep)
		}
	}
	if n != 2 {
		t.Errorf("Prune dropped %d, want 2", n)
	}
	if n, err := s.Prune(context.Background(), now, lifetime); err != nil || n != 0 {
		t.Errorf("second Prune: %d, %v; want nothing to do", n, err)
	}
}

func TestParseEntries(t *testing.T) {
	good := eviction("node-a", t0)
	moved := eviction("node-b", t0)
	for _, tc := range []struct {
		name     string
		data     map[string]string
		want     []string // agent IDs found
		wantErrs int
	}{
		{name: "empty", data: nil},
		{name: "one", data: map[string]string{Key(good.Agent): entry(t, good)}, want: []string{good.Agent}},
		{name: "key not the agent's: kept, reported", data: map[string]string{"x": entry(t, moved)}, want: []string{moved.Agent}, wantErrs: 1},
		{name: "not JSON", data: map[string]string{"x": "evicted"}, wantErrs: 1},
		{name: "no agent", data: map[string]string{"x": `{"evicted_at":"2026-11-30T10:00:00.5Z"}`}, wantErrs: 1},
		{name: "no time", data: map[string]string{"x": `{"agent":"` + good.Agent + `"}`}, wantErrs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := Parse(&corev1.ConfigMap{Data: tc.data}, time.Now())
			if len(errs) != tc.wantErrs {
				t.Errorf("errors %v, want %d", errs, tc.wantErrs)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("evictions %v, want %v", got, tc.want)
			}
			for _, id := range tc.want {
				if e, ok := got[id]; !ok || !e.At.Equal(t0) {
					t.Errorf("eviction of %s: %+v, %v", id, e, ok)
				}
			}
		})
	}
}

// The time is kept to the nanosecond: an SVID issued within the second
// after an eviction is told from one issued within the second before.
func TestEvictionTimeSubSecond(t *testing.T) {
	raw := entry(t, eviction("node-a", t0))
	if !strings.Contains(raw, `"evicted_at":"2026-11-30T10:00:00.123456789Z"`) {
		t.Fatalf("entry %s: evicted_at not RFC 3339 with sub-second precision", raw)
	}
}

func TestWatchFollowsTheConfigMap(t *testing.T) {
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	s := New(client, ns, DefaultName)
	got := make(chan []Eviction, 4)
	if s.Synced() {
		t.Fatal("Synced before Watch")
	}
	done, err := s.Watch(ctx, func(fresh []Eviction) { got <- fresh }, func(err error) { t.Errorf("invalid: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); <-done }()
	if !s.Synced() {
		t.Fatal("not Synced after Watch")
	}
	if _, ok := s.Lookup(agentID("node-a")); ok {
		t.Fatal("an eviction before any was recorded")
	}
	// Another replica's write (here the same store's) reaches the watcher.
	e := eviction("node-a", t0)
	if err := s.Record(ctx, e); err != nil {
		t.Fatal(err)
	}
	select {
	case fresh := <-got:
		if len(fresh) != 1 || fresh[0].Agent != e.Agent || !fresh[0].At.Equal(e.At) {
			t.Fatalf("changed(%+v), want the eviction of node-a", fresh)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher never saw the eviction")
	}
	if l, ok := s.Lookup(e.Agent); !ok || !l.At.Equal(e.At) || l.Replica != e.Replica {
		t.Fatalf("Lookup = %+v, %v", l, ok)
	}
}

// A store that cannot list the ConfigMap (RBAC) does not report synced
// and Watch fails, naming it, instead of serving with no evictions.
func TestWatchFailsWhenNotReadable(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(cmGVR.GroupResource(), DefaultName, errors.New("RBAC: access denied"))
	})
	s := New(client, ns, DefaultName)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done, err := s.Watch(ctx, func([]Eviction) {}, func(error) {})
	if err == nil || !strings.Contains(err.Error(), "ConfigMap "+DefaultName) {
		t.Fatalf("Watch of an unreadable ConfigMap: %v; want an error naming it", err)
	}
	<-done
	if s.Synced() {
		t.Fatal("Synced with nothing read")
	}
}
