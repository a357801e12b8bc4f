package ca

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// checkKeyIdentifiers checks RFC 5280 §4.2.1.1-2 on a chain and its root:
// every certificate has an SKI of the RFC 7093 method-1 form, and every
// certificate but the self-signed root has an AKI equal to its issuer's SKI.
func checkKeyIdentifiers(t *testing.T, chain []*x509.Certificate, roots []*x509.Certificate) {
	t.Helper()
	issuerOf := func(c *x509.Certificate) *x509.Certificate {
		for _, cand := range append(append([]*x509.Certificate(nil), chain...), roots...) {
			if cand != c && c.CheckSignatureFrom(cand) == nil {
				return cand
			}
		}
		return nil
	}
	full := chain
	if top := chain[len(chain)-1]; top.CheckSignatureFrom(top) != nil {
		if root := issuerOf(top); root != nil {
			full = append(append([]*x509.Certificate(nil), chain...), root)
		}
	}
	for i, c := range full {
		want, err := keyID(c.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.SubjectKeyId, want) {
			t.Errorf("cert %d (%s): SKI %x, want %x (RFC 7093 method 1)", i, c.Subject, c.SubjectKeyId, want)
		}
		if c.CheckSignatureFrom(c) == nil {
			continue // the self-signed root: no AKI needed
		}
		issuer := issuerOf(c)
		if issuer == nil {
			t.Fatalf("cert %d (%s): no issuer in chain or roots", i, c.Subject)
		}
		if len(c.AuthorityKeyId) == 0 || !bytes.Equal(c.AuthorityKeyId, issuer.SubjectKeyId) {
			t.Errorf("cert %d (%s): AKI %x, issuer's SKI %x", i, c.Subject, c.AuthorityKeyId, issuer.SubjectKeyId)
		}
	}
}

func TestCertificateKeyIdentifiers(t *testing.T) {
	ctx := context.Background()
	id := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	key := newKey(t)

	t.Run("rfc7093", func(t *testing.T) {
		got, err := keyID(key.Public())
		if err != nil {
			t.Fatal(err)
		}
		point := append([]byte{4}, append(key.X.FillBytes(make([]byte, 32)), key.Y.FillBytes(make([]byte, 32))...)...)
		sum := sha256.Sum256(point)
		if !bytes.Equal(got, sum[:20]) {
			t.Fatalf("keyID %x, want leftmost 160 bits of SHA-256(subjectPublicKey) %x", got, sum[:20])
		}
	})

	t.Run("across intermediate and root rotation", func(t *testing.T) {
		clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		c := newTestCA(t, clk, &memState{}, t.TempDir())
		seen := map[string]bool{}
		for step := 0; step < 70*2; step++ { // 70 hours in 30-minute steps: several intermediates, two roots
			chain, err := c.SignX509SVID(key.Public(), id, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			seen[string(chain[1].SubjectKeyId)] = true
			checkKeyIdentifiers(t, chain, c.Bundle().X509Authorities())
			if t.Failed() {
				t.Fatalf("at %s", clk.Now())
			}
			clk.Add(30 * time.Minute)
			if _, err := c.Rotate(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if len(seen) < 3 {
			t.Fatalf("only %d intermediates seen; the test did not cross rotations", len(seen))
		}
	})

	t.Run("upstream", func(t *testing.T) {
		clk := &fakeClock{t: time.Now()}
		up := newTestCA(t, clk, &memState{}, t.TempDir())
		up.mu.RLock()
		root := up.find(&up.st, KindRoot, StatusActive)
		up.mu.RUnlock()
		// The upstream signs with an intermediate of its own: chain of three.
		upInter := up.find(&up.st, KindIntermediate, StatusActive)
		u := &Upstream{Chain: []*x509.Certificate{upInter.cert, root.cert}, Signer: upInter.signer}
		dir := t.TempDir()
		log, err := audit.Open(filepath.Join(dir, "audit.log"), clk.Now)
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		c, err := New(ctx, Config{TrustDomain: td, KeyDir: dir, State: &memState{}, Audit: log, Upstream: u, Now: clk.Now, CATTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		chain, err := c.SignX509SVID(key.Public(), id, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if len(chain) != 3 {
			t.Fatalf("chain of %d, want svid, our intermediate, upstream intermediate", len(chain))
		}
		checkKeyIdentifiers(t, chain, c.Bundle().X509Authorities())
	})
}

func TestWorkloadIDRequiresPathAtCA(t *testing.T) {
	c := newTestCA(t, &fakeClock{t: time.Now()}, &memState{}, t.TempDir())
	if _, err := c.SignX509SVID(newKey(t).Public(), td.ID(), time.Hour); err == nil {
		t.Fatal("signed an SVID for the bare trust domain ID")
	}
}

// The upstream CA's key is a credential like a join token: a key file
// others may read is refused, naming file and mode.
func TestJoinTokenNotInArgvUpstreamKeyMode(t *testing.T) {
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "up"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "up.pem"), filepath.Join(dir, "up.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: mustPKCS8(t, key)}), 0o600)
	if _, err := LoadUpstream(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	os.Chmod(keyFile, 0o644)
	if _, err := LoadUpstream(certFile, keyFile); err == nil || !strings.Contains(err.Error(), keyFile) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("a world-readable upstream key: %v", err)
	}
}
