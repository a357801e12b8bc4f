package agent

import (
	"crypto"
	"crypto/x509"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func jwtBundle(td spiffeid.TrustDomain, jwks []byte) (map[string]crypto.PublicKey, error) {
	b, err := jwtbundle.Parse(td, jwks)
	if err != nil {
		return nil, err
	}
	return b.JWTAuthorities(), nil
}

func parseDERs(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
