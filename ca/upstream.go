package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/sigil-mesh/sigil/privatefile"
	"go.step.sm/crypto/pemutil"
)

// Upstream is an existing PKI that signs Sigil's intermediates.
type Upstream struct {
	// Chain is the upstream signing certificate first, then its issuers,
	// ending with the self-signed root that goes in the trust bundle.
	Chain  []*x509.Certificate
	Signer crypto.Signer
}

func (u *Upstream) root() *x509.Certificate { return u.Chain[len(u.Chain)-1] }

// intermediates are the upstream certificates between our intermediate and
// the root, which every SVID chain carries.
func (u *Upstream) intermediates() []*x509.Certificate { return u.Chain[:len(u.Chain)-1] }

// maxKeyFile bounds the upstream key file read.
const maxKeyFile = 1 << 20

// LoadUpstream reads the upstream CA's certificate chain (signing
// certificate first, root last) and its key (PEM, unencrypted, in a file
// only its owner may read: mode 0600 or 0400).
func LoadUpstream(certFile, keyFile string) (*Upstream, error) {
	chain, err := pemutil.ReadCertificateBundle(certFile)
	if err != nil {
		return nil, fmt.Errorf("ca: upstream-cert %s: %w", certFile, err)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("ca: upstream-cert %s: no certificate", certFile)
	}
	// The key signs every intermediate: like a join token, refused when
	// others may read it.
	keyPEM, err := privatefile.Read(keyFile, maxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("ca: upstream-key: %w", err)
	}
	key, err := pemutil.ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: upstream-key %s: %w", keyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: upstream-key %s: not a signing key", keyFile)
	}
	u := &Upstream{Chain: chain, Signer: signer}
	if err := u.check(); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *Upstream) check() error {
	signing := u.Chain[0]
	if !signing.IsCA || signing.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("ca: upstream-cert: the first certificate is not a CA that may sign certificates")
	}
	if signing.MaxPathLenZero {
		return errors.New("ca: upstream-cert: path length 0 leaves no room for Sigil's intermediate")
	}
	if !publicKeysEqual(signing.PublicKey, u.Signer.Public()) {
		return errors.New("ca: upstream-key does not match the first certificate of upstream-cert")
	}
	root := u.root()
	if err := root.CheckSignatureFrom(root); err != nil {
		return errors.New("ca: upstream-cert: the last certificate must be the self-signed root; append it to the file")
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range u.intermediates() {
		inter.AddCert(c)
	}
	if _, err := signing.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("ca: upstream-cert: chain does not verify: %w", err)
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}
