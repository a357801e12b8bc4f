// Package testpki makes throwaway certificates for tests: a CA of P-256
// keys valid for an hour either side of now, and leaves it signs, all in
// memory. Not for anything but tests.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"sync/atomic"
	"testing"
	"time"
)

// Authority is a test CA.
type Authority struct {
	Cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial atomic.Int64
}

// NewAuthority makes a CA, valid from an hour ago to an hour from now.
func NewAuthority(t testing.TB) *Authority {
	t.Helper()
	a := &Authority{key: key(t)}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, a.key.Public(), a.key)
	if err != nil {
		t.Fatal(err)
	}
	a.Cert, _ = x509.ParseCertificate(der)
	a.serial.Store(1)
	return a
}

// Pool is a pool that trusts the CA.
func (a *Authority) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(a.Cert)
	return pool
}

// Leaf signs a new P-256 key's certificate from tmpl (its serial number
// and, when zero, its validity are set here: the CA's) and returns it
// with its key, and the parsed certificate.
func (a *Authority) Leaf(t testing.TB, tmpl *x509.Certificate) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	k := key(t)
	tmpl.SerialNumber = big.NewInt(a.serial.Add(1))
	if tmpl.NotAfter.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = a.Cert.NotBefore, a.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, k.Public(), a.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}, leaf
}

func key(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
