// Package secretkeys keeps Sigil's CA on Kubernetes in one Secret: the
// CA's state document and the PEM private key of every root, intermediate
// and JWT key it references. It is both the CA's StateStore and its
// KeyStore (package ca), so every server replica signs with the same CA and
// the Secret is the only copy of the keys: encrypted at rest where the
// cluster's EncryptionConfiguration encrypts Secrets.
//
// Writes are compare-and-swap on the Secret's resourceVersion: the first
// save creates the Secret (create-if-absent, so of two replicas racing at
// first start one wins and the other gets ca.ErrStateConflict, reloads
// and takes the winner's CA), and every later save is an update that
// fails with ca.ErrStateConflict when another replica saved since this one
// loaded. A new key lives in memory until the save that references it.
//
// Typical use:
//
//	store := secretkeys.New(clients.Core, ns, secretkeys.DefaultName)
//	authority, err := ca.New(ctx, ca.Config{TrustDomain: td, State: store, Keys: store, Audit: log})
//	err = store.Watch(ctx, &wg, func() { _ = authority.Reload(ctx) }) // synced; wg.Wait() once ctx ends
package secretkeys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/sigil-mesh/sigil/ca"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// DefaultName is the Secret's name, in the server's --k8s-namespace.
const DefaultName = "sigil-ca"

// StateKey is the Secret data key of the CA's state (JSON).
const StateKey = "ca-state.json"

// keySuffix ends the Secret data key of each private key (PEM, "EC
// PRIVATE KEY"); refPrefix begins the reference the CA keeps.
const (
	keySuffix = ".key"
	refPrefix = "secret:"
)

// Store is the CA's state and keys in one Secret. Its methods are safe for
// concurrent use.
type Store struct {
	client  kubernetes.Interface
	secrets corev1client.SecretInterface
	name    string

	mu      sync.Mutex
	version string            // resourceVersion last read or written; "" while absent
	keys    map[string][]byte // data key → PEM, as last read or written
	pending map[string][]byte // keys made since, saved with the next state
	removed map[string]bool   // keys dropped since, left out of the next save
}

var (
	_ ca.StateStore = (*Store)(nil)
	_ ca.KeyStore   = (*Store)(nil)
)

// New returns the store of the Secret namespace/name. It reads nothing
// until LoadCAState.
func New(client kubernetes.Interface, namespace, name string) *Store {
	return &Store{client: client, secrets: client.CoreV1().Secrets(namespace), name: name, keys: map[string][]byte{}, pending: map[string][]byte{}, removed: map[string]bool{}}
}

// LoadCAState reads the Secret and returns the CA's state, or nil when
// the Secret does not exist yet. Keys made and not yet saved stay pending
// (the CA removes those of a save that conflicted).
func (s *Store) LoadCAState(ctx context.Context) ([]byte, error) {
	sec, err := s.secrets.Get(ctx, s.name, metav1.GetOptions{})
	s.mu.Lock()
	defer s.mu.Unlock()
	if apierrors.IsNotFound(err) {
		s.version, s.keys = "", map[string][]byte{}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secretkeys: reading Secret %s: %w", s.name, err)
	}
	s.take(sec)
	return sec.Data[StateKey], nil
}

// Peek returns the CA's state as the Secret holds it now, nil when it is
// absent, without changing what the store compares its next save against
// (so a reader never hides another replica's save from the CA).
func (s *Store) Peek(ctx context.Context) ([]byte, error) {
	sec, err := s.secrets.Get(ctx, s.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secretkeys: reading Secret %s: %w", s.name, err)
	}
	return sec.Data[StateKey], nil
}

// take makes sec the store's last known Secret. s.mu is held.
func (s *Store) take(sec *corev1.Secret) {
	s.version = sec.ResourceVersion
	s.keys = map[string][]byte{}
	for k, v := range sec.Data {
		if strings.HasSuffix(k, keySuffix) {
			s.keys[k] = v
		}
	}
}

// SaveCAState writes the state with the keys made since the last save, and
// without the keys removed since. It fails with ca.ErrStateConflict when
// the Secret was created or changed by another replica since this one
// read it; nothing is written then.
func (s *Store) SaveCAState(ctx context.Context, state []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data := map[string][]byte{StateKey: state}
	for k, v := range s.keys {
		if !s.removed[k] {
			data[k] = v
		}
	}
	for k, v := range s.pending {
		data[k] = v
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: s.name, ResourceVersion: s.version,
			Labels: map[string]string{"app.kubernetes.io/name": "sigil", "app.kubernetes.io/component": "ca"}},
		Type: corev1.SecretTypeOpaque,
		Data: data,
	}
	var out *corev1.Secret
	var err error
	if s.version == "" {
		out, err = s.secrets.Create(ctx, sec, metav1.CreateOptions{})
	} else {
		out, err = s.secrets.Update(ctx, sec, metav1.UpdateOptions{})
	}
	switch {
	case apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) || s.version != "" && apierrors.IsNotFound(err):
		return fmt.Errorf("secretkeys: Secret %s: %w", s.name, ca.ErrStateConflict)
	case err != nil:
		return fmt.Errorf("secretkeys: writing Secret %s (namespace and RBAC: docs/kubernetes.md#high-availability): %w", s.name, err)
	}
	s.take(out)
	s.pending, s.removed = map[string][]byte{}, map[string]bool{}
	return nil
}

// CreateKey makes a P-256 key; it reaches the Secret with the next
// SaveCAState.
func (s *Store) CreateKey(name string) (crypto.Signer, string, error) {
	if name == "" || strings.ContainsAny(name, "/\\") {
		return nil, "", fmt.Errorf("secretkeys: key name %q", name)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("secretkeys: making key %s: %w", name, err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, "", fmt.Errorf("secretkeys: encoding key %s: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending[name+keySuffix] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	return key, refPrefix + name, nil
}

// ErrNoKey is the error of LoadKey for a reference the Secret does not
// hold.
var ErrNoKey = errors.New("secretkeys: no such key in the Secret")

// LoadKey returns the signer of a key CreateKey made.
func (s *Store) LoadKey(ref string) (crypto.Signer, error) {
	name, ok := strings.CutPrefix(ref, refPrefix)
	if !ok {
		return nil, fmt.Errorf("secretkeys: key %q: not a key of the Secret", ref)
	}
	s.mu.Lock()
	pemBytes, ok := s.pending[name+keySuffix]
	if !ok {
		pemBytes, ok = s.keys[name+keySuffix]
	}
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNoKey, ref)
	}
	// The key's bytes are never put in an error: only its name.
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "EC PRIVATE KEY" {
		return nil, fmt.Errorf("secretkeys: key %s: not a PEM EC private key", ref)
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("secretkeys: key %s: not a valid EC private key", ref)
	}
	return key, nil
}

// RemoveKey drops a key; the next SaveCAState leaves it out.
func (s *Store) RemoveKey(ref string) error {
	name, ok := strings.CutPrefix(ref, refPrefix)
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, name+keySuffix)
	s.removed[name+keySuffix] = true
	return nil
}

// Version returns the resourceVersion the store last read or wrote, ""
// while the Secret is absent.
func (s *Store) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}
