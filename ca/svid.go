package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrNotReady means the CA has no active intermediate or JWT key, which
// happens only if rotation failed; callers should retry later.
var ErrNotReady = errors.New("ca: no active signing authority")

// MaxCSRSize bounds the CSRs the server parses; a P-256 CSR is ~250 bytes.
const MaxCSRSize = 8 << 10

// ParseCSR parses a DER CSR from an agent, checks its self-signature and
// its key, and returns the public key to certify. Everything else in the CSR
// (subject, SANs, extensions) is ignored: the identity comes from the
// registration entry, never from what the caller asks for.
func ParseCSR(der []byte) (crypto.PublicKey, error) {
	if len(der) == 0 {
		return nil, errors.New("ca: csr: empty")
	}
	if len(der) > MaxCSRSize {
		return nil, fmt.Errorf("ca: csr: %d bytes exceeds %d", len(der), MaxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("ca: csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("ca: csr: signature: %w", err)
	}
	if why := checkKey(csr.PublicKey); why != "" {
		return nil, fmt.Errorf("ca: csr: %s", why)
	}
	return csr.PublicKey, nil
}

// checkKey accepts the keys TLS 1.3 peers handle everywhere: ECDSA P-256
// and P-384, RSA of 2048 bits or more, and Ed25519. It returns what is
// wrong with any other, or ""; its callers make the error.
func checkKey(pub crypto.PublicKey) (why string) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Sprintf("ecdsa curve %s not allowed (P-256 or P-384)", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Sprintf("rsa key of %d bits is too small (2048 or more)", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Sprintf("key type %T not allowed", pub)
	}
	return ""
}

// SignX509SVID signs an X.509-SVID for id over pub, valid for ttl or until
// the intermediate expires, whichever is sooner. An id outside the CA's
// trust domain or without a path is refused. It returns the chain: the
// SVID, then the intermediates up to (not including) the root.
//
// This is the hot path of the CA, so the template is built by hand for
// crypto/x509 rather than through x509util: `make bench` measures both
// (see bench/README.md).
func (c *CA) SignX509SVID(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	return c.signSVID(pub, id, nil, nil, ttl)
}

// signSVID is SignX509SVID with extra DNS and IP SANs (nil for workload
// SVIDs; see SignServingCert).
func (c *CA) signSVID(pub crypto.PublicKey, id spiffeid.ID, dnsNames []string, ips []net.IP, ttl time.Duration) ([]*x509.Certificate, error) {
	if id.TrustDomain() != c.cfg.TrustDomain {
		return nil, fmt.Errorf("ca: %s is not in trust domain %s", id, c.cfg.TrustDomain)
	}
	if id.Path() == "" {
		// X509-SVID §2: a leaf's ID has a path; relying parties refuse one without.
		return nil, fmt.Errorf("ca: %s has no path; an X509-SVID's ID needs one", id)
	}
	if why := checkKey(pub); why != "" {
		return nil, fmt.Errorf("ca: %s", why)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("ca: ttl %s must be positive", ttl)
	}
	c.mu.RLock()
	inter := c.find(&c.st, KindIntermediate, StatusActive)
	c.mu.RUnlock()
	if inter == nil || inter.signer == nil {
		return nil, ErrNotReady
	}
	tmpl, err := svidTemplate(pub, id, c.cfg.Now(), ttl, inter.cert.NotAfter)
	if err != nil {
		return nil, err
	}
	tmpl.DNSNames, tmpl.IPAddresses = dnsNames, ips
	if tmpl.AuthorityKeyId, err = authorityKeyID(inter.cert); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inter.cert, pub, inter.signer)
	if err != nil {
		return nil, fmt.Errorf("ca: signing svid for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parsing signed svid: %w", err)
	}
	chain := []*x509.Certificate{leaf, inter.cert}
	if up := c.cfg.Upstream; up != nil {
		chain = append(chain, up.intermediates()...)
	}
	return chain, nil
}

// svidTemplate is the X509-SVID profile: one URI SAN, not a CA,
// digitalSignature only, serverAuth and clientAuth, and a Subject Key
// Identifier (RFC 5280 §4.2.1.2, as SPIRE's SVIDs carry). The backdating for
// clock skew is capped at a tenth of the TTL, so that renewal at half of
// the certificate's span stays near half of its real life even for the
// 20-second SVIDs tests use.
func svidTemplate(pub crypto.PublicKey, id spiffeid.ID, now time.Time, ttl time.Duration, limit time.Time) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(limit) {
		notAfter = limit
	}
	ski, err := keyID(pub)
	if err != nil {
		return nil, err
	}
	keyUsage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Sigil"}, SerialNumber: serial.Text(16)},
		NotBefore:             now.Add(-min(backdate, ttl/10)),
		NotAfter:              notAfter,
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              keyUsage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          ski,
	}, nil
}
