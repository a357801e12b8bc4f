package svid

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ParseBundle turns the bundle the server sent (at attestation and on the
// Sync stream) into td's SPIFFE bundle: it must be for td and hold at
// least one X.509 root; its JWKS must parse.
func ParseBundle(td spiffeid.TrustDomain, p *agentv1.Bundle) (*spiffebundle.Bundle, error) {
	if p == nil || p.GetTrustDomain() != td.Name() {
		return nil, fmt.Errorf("svid: server sent a bundle for %q, want %s", p.GetTrustDomain(), td)
	}
	jwt, err := jwtbundle.Parse(td, p.GetJwks())
	if err != nil {
		return nil, fmt.Errorf("svid: bundle jwks: %w", err)
	}
	roots, err := parseCertificates(p.GetX509Authorities(), "bundle root")
	if err != nil {
		return nil, err
	}
	if len(roots) == 0 {
		return nil, errors.New("svid: server sent a bundle without roots")
	}
	b := spiffebundle.New(td)
	b.SetJWTAuthorities(jwt.JWTAuthorities())
	b.SetX509Authorities(roots)
	b.SetSequenceNumber(uint64(p.GetSequence()))
	b.SetRefreshHint(time.Duration(p.GetRefreshHint()) * time.Second)
	return b, nil
}

// parseCertificates parses DER certificates, one each (the form the agent
// API carries chains and roots in); the error names the first that does
// not parse as what and its index.
func parseCertificates(ders [][]byte, what string) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("svid: %s %d: %w", what, i, err)
		}
		out = append(out, c)
	}
	return out, nil
}
