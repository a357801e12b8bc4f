package secretkeys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"log/slog"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const ns = "sigil-system"

// TestSecretKeyStoreConflicts is the store's compare-and-swap: a save
// over a Secret this store has not read fails with ca.ErrStateConflict and
// writes nothing, whether the Secret was created or updated since.
func TestSecretKeyStoreConflicts(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		// other runs on a second store of the same Secret between this
		// store's load and its save.
		other func(t *testing.T, o *Store)
	}{
		{"created by another replica", func(t *testing.T, o *Store) {
			if err := o.SaveCAState(ctx, []byte(`{"other":true}`)); err != nil {
				t.Fatal(err)
			}
		}},
		{"updated by another replica", func(t *testing.T, o *Store) {
			if err := o.SaveCAState(ctx, []byte(`{"other":true}`)); err != nil {
				t.Fatal(err)
			}
			if err := o.SaveCAState(ctx, []byte(`{"other":2}`)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client := casClientset()
			secrets := client.CoreV1().Secrets(ns)
			mine, other := New(client, ns, DefaultName), New(client, ns, DefaultName)
			if _, err := mine.LoadCAState(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := other.LoadCAState(ctx); err != nil {
				t.Fatal(err)
			}
			tc.other(t, other)
			if _, ref, err := mine.CreateKey("intermediate-1"); err != nil || ref == "" {
				t.Fatalf("CreateKey: %q, %v", ref, err)
			}
			err := mine.SaveCAState(ctx, []byte(`{"mine":true}`))
			if !errors.Is(err, ca.ErrStateConflict) {
				t.Fatalf("save over another replica's Secret: %v, want ErrStateConflict", err)
			}
			sec, err := secrets.Get(ctx, DefaultName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if string(sec.Data[StateKey]) == `{"mine":true}` || sec.Data["intermediate-1"+keySuffix] != nil {
				t.Fatalf("a conflicting save was written: %v", sec.Data)
			}
			// Reloaded, the store saves over the newer Secret.
			if _, err := mine.LoadCAState(ctx); err != nil {
				t.Fatal(err)
			}
			if err := mine.SaveCAState(ctx, []byte(`{"mine":true}`)); err != nil {
				t.Fatalf("save after reload: %v", err)
			}
		})
	}
}

// TestSecretKeyStoreKeys: a key made is loadable at once, reaches the
// Secret with the next save (PEM, type Opaque), is loadable by another
// replica after its load, and a removed key is left out of the next save.
func TestSecretKeyStoreKeys(t *testing.T) {
	ctx := context.Background()
	client := casClientset()
	secrets := client.CoreV1().Secrets(ns)
	s := New(client, ns, DefaultName)
	signer, ref, err := s.CreateKey("root-1")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.LoadKey(ref); err != nil || !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(signer.Public()) {
		t.Fatalf("LoadKey before save: %v", err)
	}
	if err := s.SaveCAState(ctx, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	sec, err := secrets.Get(ctx, DefaultName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Type != "Opaque" || len(sec.Data["root-1.key"]) == 0 {
		t.Fatalf("Secret: type %q, keys %d", sec.Type, len(sec.Data))
	}
	other := New(client, ns, DefaultName)
	if _, err := other.LoadKey(ref); !errors.Is(err, ErrNoKey) {
		t.Fatalf("LoadKey before load: %v, want ErrNoKey", err)
	}
	if _, err := other.LoadCAState(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := other.LoadKey(ref); err != nil || !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(signer.Public()) {
		t.Fatalf("LoadKey on another replica: %v", err)
	}
	if err := other.RemoveKey(ref); err != nil {
		t.Fatal(err)
	}
	if err := other.SaveCAState(ctx, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	sec, err = secrets.Get(ctx, DefaultName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sec.Data["root-1.key"]; ok {
		t.Fatal("a removed key is still in the Secret")
	}
	if _, err := s.LoadKey("softkms:path=/etc/passwd"); err == nil {
		t.Fatal("LoadKey of a softkms reference succeeded")
	}
}

// TestSecretKeyStoreCreateRace starts CAs on one empty Secret at once, as
// replicas do at a cluster's first start: they end with one CA (the same
// roots and signing intermediate), the losers having taken the winner's.
func TestSecretKeyStoreCreateRace(t *testing.T) {
	ctx := context.Background()
	client := casClientset()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	const replicas = 4
	cas := make([]*ca.CA, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		log, err := audit.Open(filepath.Join(t.TempDir(), "audit.log"), time.Now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { log.Close() })
		store := New(client, ns, DefaultName)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cas[i], errs[i] = ca.New(ctx, ca.Config{TrustDomain: td, State: store, Keys: store, Audit: log, Logger: slog.New(slog.DiscardHandler)})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	want := cas[0].Bundle().X509Authorities()
	if len(want) != 1 {
		t.Fatalf("replica 0 has %d roots, want 1", len(want))
	}
	for i, c := range cas[1:] {
		got := c.Bundle().X509Authorities()
		if len(got) != 1 || !got[0].Equal(want[0]) {
			t.Fatalf("replica %d has another CA than replica 0", i+1)
		}
	}
	// Every replica signs, with the one intermediate, an SVID the others'
	// bundle verifies.
	a, b := cas[1].Authorities(), cas[0].Authorities()
	if len(a) != len(b) || a[1].ID != b[1].ID {
		t.Fatalf("authorities differ: %+v vs %+v", a, b)
	}
}

// TestSecretKeyStoreWatch: a replica hears of a save another replica made
// (to reload its CA), and not of its own.
func TestSecretKeyStoreWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := casClientset()
	mine, other := New(client, ns, DefaultName), New(client, ns, DefaultName)
	if err := mine.SaveCAState(ctx, []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{}, 10)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	if err := mine.Watch(ctx, &wg, func() { changed <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if _, err := other.LoadCAState(ctx); err != nil {
		t.Fatal(err)
	}
	if err := other.SaveCAState(ctx, []byte(`{"v":2}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("another replica's save was not seen")
	}
	if got, err := mine.LoadCAState(ctx); err != nil || string(got) != `{"v":2}` {
		t.Fatalf("reload: %s, %v", got, err)
	}
	if err := mine.SaveCAState(ctx, []byte(`{"v":3}`)); err != nil {
		t.Fatal(err)
	}
	// Its own save is not news. A second save by the other replica is, so
	// its arrival bounds the wait for a wrong one.
	if _, err := other.LoadCAState(ctx); err != nil {
		t.Fatal(err)
	}
	if err := other.SaveCAState(ctx, []byte(`{"v":4}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("another replica's second save was not seen")
	}
	select {
	case <-changed:
		t.Fatal("a replica was told of its own save")
	default:
	}
}

// TestSecretKeyStoreRotation: the leader's rotation of the intermediate
// writes the Secret; a replica that rotates on a stale copy gets
// ca.ErrStateConflict and writes nothing, and after Reload it has the
// leader's CA, keys included (it signs with the new intermediate).
func TestSecretKeyStoreRotation(t *testing.T) {
	ctx := context.Background()
	client := casClientset()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	newCA := func() *ca.CA {
		log, err := audit.Open(filepath.Join(t.TempDir(), "audit.log"), clock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { log.Close() })
		store := New(client, ns, DefaultName)
		c, err := ca.New(ctx, ca.Config{TrustDomain: td, State: store, Keys: store, Audit: log, Now: clock,
			RootTTL: 100 * time.Hour, CATTL: 6 * time.Hour, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	leader, follower := newCA(), newCA()
	mu.Lock()
	now = now.Add(4 * time.Hour) // past half the intermediate's life: prepare the next
	mu.Unlock()
	if changed, err := leader.Rotate(ctx); err != nil {
		t.Fatalf("leader's rotation: %v (changed %v)", err, changed)
	}
	if _, err := follower.Rotate(ctx); !errors.Is(err, ca.ErrStateConflict) {
		t.Fatalf("rotation on a stale copy: %v, want ErrStateConflict", err)
	}
	if err := follower.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	want, got := leader.Authorities(), follower.Authorities()
	if len(got) != len(want) || len(got) != 5 {
		t.Fatalf("after reload: %d authorities, leader has %d (want 5: root, two intermediates, two JWT keys)", len(got), len(want))
	}
	for i := range want {
		if got[i].ID != want[i].ID || got[i].Status != want[i].Status {
			t.Fatalf("authority %d: %+v, leader has %+v", i, got[i], want[i])
		}
	}
	mu.Lock()
	now = now.Add(2 * time.Hour) // past five sixths: the prepared one takes over
	mu.Unlock()
	if _, err := leader.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := follower.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")
	a, err := leader.SignX509SVID(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := follower.SignX509SVID(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatalf("the reloaded CA does not sign: %v", err)
	}
	if !bytes.Equal(a[1].Raw, b[1].Raw) {
		t.Fatal("leader and reloaded follower sign with different intermediates")
	}
}

// TestGoroutinesOwnedWatch: Watch's informer runs in a goroutine counted
// in the caller's WaitGroup, so the server's shutdown waits for it and
// none is left running once Wait returns.
func TestGoroutinesOwnedWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := New(casClientset(), ns, DefaultName)
	var wg sync.WaitGroup
	if err := store.Watch(ctx, &wg, func() {}); err != nil {
		t.Fatal(err)
	}
	if n := watchGoroutines(t); n == 0 {
		t.Fatal("no goroutine started by Watch is running: the check below would prove nothing")
	}
	cancel()
	wg.Wait()
	if n := watchGoroutines(t); n != 0 {
		t.Fatalf("%d goroutines started by Watch still run after its WaitGroup returned", n)
	}
}

// watchGoroutines counts the running goroutines that Watch started.
func watchGoroutines(t *testing.T) int {
	t.Helper()
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	return strings.Count(b.String(), "created by github.com/sigil-mesh/sigil/k8s/secretkeys.(*Store).Watch")
}
