package ca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
)

// keyID is the key identifier Sigil puts in the Subject Key Identifier of
// every certificate it signs (SVIDs and CA certificates alike) and, through
// the issuer's, in the Authority Key Identifier: RFC 7093 §2 method 1, the
// leftmost 160 bits of the SHA-256 of the subjectPublicKey BIT STRING. It is
// the method Go's crypto/x509 uses for CA certificates since Go 1.25; it is
// set explicitly here so that SVIDs carry it too (RFC 5280 §4.2.1.2) and a
// GODEBUG cannot change it.
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: key identifier: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("ca: key identifier: %w", err)
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

// authorityKeyID is what a certificate issued by parent names in its
// Authority Key Identifier: the parent's own SKI when it has one (which
// crypto/x509 would copy anyway), else the identifier of its key, so that an
// upstream CA without an SKI still gets a matching AKI in what it issues.
func authorityKeyID(parent *x509.Certificate) ([]byte, error) {
	if len(parent.SubjectKeyId) > 0 {
		return parent.SubjectKeyId, nil
	}
	return keyID(parent.PublicKey)
}
