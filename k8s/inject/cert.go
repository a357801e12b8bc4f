package inject

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sigil-mesh/sigil/naming"
)

// ServiceName is the Service in front of sigil-server that a webhook
// configuration's clientConfig.service names.
const ServiceName = "sigil-server"

// ServingHosts are the names the API server may call the webhook by: the
// Service's in-cluster DNS names in namespace ns (as Kubernetes' webhook
// client checks, <svc>.<ns>.svc), then extra (--webhook-tls-san: DNS
// names or IP addresses, for a webhook called by URL).
func ServingHosts(ns string, extra []string) []string {
	return append([]string{ServiceName + "." + ns + ".svc", ServiceName + "." + ns + ".svc." + naming.DefaultClusterDomain}, extra...)
}

// SignFunc signs a serving certificate over pub and returns its chain,
// leaf first (the server's CA.SignServingCert with its ID and hosts bound).
type SignFunc func(pub crypto.PublicKey) ([]*x509.Certificate, error)

// ServingCert is the webhook's TLS certificate: a fresh key in memory
// only, signed through sign, renewed at half of its life as the server's
// own SVID is. Time comes from now.
type ServingCert struct {
	sign SignFunc
	now  func() time.Time
	cert atomic.Pointer[tls.Certificate]
}

// NewServingCert issues the first certificate.
func NewServingCert(sign SignFunc, now func() time.Time) (*ServingCert, error) {
	if sign == nil || now == nil {
		return nil, errors.New("inject: serving certificate: no signer or clock")
	}
	s := &ServingCert{sign: sign, now: now}
	if err := s.renew(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate is tls.Config's hook.
func (s *ServingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cert.Load(), nil
}

// Leaf is the certificate in use.
func (s *ServingCert) Leaf() *x509.Certificate { return s.cert.Load().Leaf }

// RenewIfDue renews the certificate once half of its life has passed; it
// reports whether it did. On error the old certificate stays in use.
func (s *ServingCert) RenewIfDue() (bool, error) {
	leaf := s.Leaf()
	if s.now().Before(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)) {
		return false, nil
	}
	return true, s.renew()
}

func (s *ServingCert) renew() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("inject: serving key: %w", err)
	}
	chain, err := s.sign(key.Public())
	if err != nil {
		return fmt.Errorf("inject: serving certificate: %w", err)
	}
	if len(chain) == 0 {
		return errors.New("inject: serving certificate: empty chain")
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	s.cert.Store(cert)
	return nil
}
