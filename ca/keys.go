package ca

import (
	"context"
	"crypto"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/sigil-mesh/sigil/atomicfile"
	"os"
	"path/filepath"
	"strings"

	"go.step.sm/crypto/kms"
	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/pemutil"
)

// KeyStore makes, loads and removes the CA's signing keys. A key is named
// by the reference CreateKey returns, which the CA keeps in its state.
// Keys are P-256 (ECDSA with SHA-256). The built-in store is softkms in the
// key directory; on Kubernetes the server passes one that keeps the keys
// in a Secret beside the state (package k8s/secretkeys).
type KeyStore interface {
	CreateKey(name string) (crypto.Signer, string, error)
	LoadKey(ref string) (crypto.Signer, error)
	RemoveKey(ref string) error
}

var _ KeyStore = (*keyManager)(nil)

// keyManager makes and loads the CA's signing keys through a KMS.
type keyManager struct {
	km  apiv1.KeyManager
	typ apiv1.Type
	dir string
}

// DefaultKMS is the key manager used when none is configured.
const DefaultKMS = "softkms:"

// newKeyManager opens the KMS that uri names. Only softkms is linked into
// this binary; another type is refused by name rather than replaced.
func newKeyManager(ctx context.Context, uri, dir string) (*keyManager, error) {
	if uri == "" {
		uri = DefaultKMS
	}
	typ, err := apiv1.TypeOf(uri)
	if err != nil {
		return nil, fmt.Errorf("ca: kms %q: %w", uri, err)
	}
	if typ != apiv1.SoftKMS {
		return nil, fmt.Errorf("ca: kms %q: type %q is not built into sigil-server (only softkms is)", uri, typ)
	}
	km, err := kms.New(ctx, apiv1.Options{Type: typ, URI: uri})
	if err != nil {
		return nil, fmt.Errorf("ca: kms %q: %w", uri, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: key dir: %w", err)
	}
	return &keyManager{km: km, typ: typ, dir: dir}, nil
}

// CreateKey makes a new P-256 key called name and returns its signer and
// the reference that LoadKey takes back.
func (m *keyManager) CreateKey(name string) (crypto.Signer, string, error) {
	resp, err := m.km.CreateKey(&apiv1.CreateKeyRequest{Name: name, SignatureAlgorithm: apiv1.ECDSAWithSHA256})
	if err != nil {
		return nil, "", fmt.Errorf("ca: creating key %s: %w", name, err)
	}
	signer, err := m.km.CreateSigner(&resp.CreateSignerRequest)
	if err != nil {
		return nil, "", fmt.Errorf("ca: signer for key %s: %w", name, err)
	}
	// softkms hands the key back in memory; keep it in a 0600 file, written
	// whole before it is referenced so a crash never leaves half a key.
	path := filepath.Join(m.dir, name+".key")
	block, err := pemutil.Serialize(resp.PrivateKey)
	if err != nil {
		return nil, "", fmt.Errorf("ca: encoding key %s: %w", name, err)
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, "", fmt.Errorf("ca: saving key %s: %w", name, err)
	}
	return signer, "softkms:path=" + path, nil
}

// LoadKey returns the signer for a reference made by CreateKey.
func (m *keyManager) LoadKey(ref string) (crypto.Signer, error) {
	if !strings.HasPrefix(ref, "softkms:") {
		return nil, fmt.Errorf("ca: key %q: not a softkms key", ref)
	}
	signer, err := m.km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: ref})
	if err != nil {
		return nil, fmt.Errorf("ca: loading key %q: %w", ref, err)
	}
	return signer, nil
}

// RemoveKey deletes a key that is no longer needed (an expired
// authority's).
func (m *keyManager) RemoveKey(ref string) error {
	path := strings.TrimPrefix(ref, "softkms:path=")
	if path == ref {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ca: removing key: %w", err)
	}
	return nil
}
