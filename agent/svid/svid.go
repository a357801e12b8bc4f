// Package svid is the agent's own X.509-SVID and the checks every SVID the
// agent receives passes: attestation (a join token, or on Kubernetes the
// projected service-account token, from a TokenSource, traded for the
// first SVID and the bundle), renewal with a fresh key,
// persistence in the data dir, and the two steps the workload cache
// (agent/cache) shares with it: NewKeyAndCSR makes a key on this node and
// its CSR, VerifyChain checks what the server signed before anything uses
// it (the chain to the bundle, expiry, the SPIFFE ID expected, the key).
//
// The agent's loop that decides when to renew or re-attest, and what the
// node serves meanwhile, is the agent's wiring (package agent).
package svid

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// NewKeyAndCSR makes a P-256 key on this node and a DER CSR for it. The
// CSR names nothing: the server decides the SPIFFE ID from the entry or
// the attestation, and takes only the public key.
func NewKeyAndCSR() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("svid: key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("svid: csr: %w", err)
	}
	return key, csr, nil
}

// WantID checks the SPIFFE ID of a signed SVID: nil when it is the one
// expected, else an error ("svid: ...") that says what was expected.
type WantID func(spiffeid.ID) error

// Exactly expects the SVID of one SPIFFE ID (a workload's entry).
func Exactly(want spiffeid.ID) WantID {
	return func(got spiffeid.ID) error {
		if got != want {
			return fmt.Errorf("svid: signed for %s, want %s", got, want)
		}
		return nil
	}
}

// AgentOf expects an agent ID of trust domain td
// (spiffe://td/sigil/agent/ATTESTOR/NODE, naming.IsAgentID).
func AgentOf(td spiffeid.TrustDomain) WantID {
	return func(got spiffeid.ID) error {
		if !naming.IsAgentID(td, got) {
			return fmt.Errorf("svid: server issued %s, which is not an agent ID", got)
		}
		return nil
	}
}

// VerifyChain checks a certificate chain (DER, leaf first) the server
// signed for key, before anything uses it: each certificate parses, the
// chain leads to a root of bundles and is valid at now (x509svid.Verify:
// expiry included), want accepts the leaf's SPIFFE ID, and the leaf is
// for key (the server signed the CSR sent, not another). It returns the
// SVID with key; errors start with "svid: ".
func VerifyChain(chain [][]byte, key *ecdsa.PrivateKey, bundles x509bundle.Source, now time.Time, want WantID) (*x509svid.SVID, error) {
	certs, err := parseCertificates(chain, "certificate")
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("svid: empty chain")
	}
	id, _, err := x509svid.Verify(certs, bundles, x509svid.WithTime(now))
	if err != nil {
		return nil, fmt.Errorf("svid: %w", err)
	}
	if err := want(id); err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, errors.New("svid: certificate is not for the key sent")
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}
