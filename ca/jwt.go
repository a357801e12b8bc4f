package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func (c *CA) makeJWTKey(st *state) (*authority, error) {
	signer, ref, err := c.keys.CreateKey(c.keyName(KindJWT))
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("ca: jwt key: %w", err)
	}
	jwk := jose.JSONWebKey{Key: signer.Public()}
	thumb, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("ca: jwt key id: %w", err)
	}
	now := c.cfg.Now()
	return &authority{
		Kind: KindJWT, PublicDER: der, pub: signer.Public(), KeyRef: ref, signer: signer,
		KeyID:     base64.RawURLEncoding.EncodeToString(thumb),
		NotBefore: now, NotAfter: now.Add(c.cfg.CATTL),
	}, nil
}

// SignJWTSVID signs a JWT-SVID (ES256) for id with the given audience,
// valid for ttl or until the signing key expires, whichever is sooner.
func (c *CA) SignJWTSVID(id spiffeid.ID, audience []string, ttl time.Duration) (string, time.Time, error) {
	if id.TrustDomain() != c.cfg.TrustDomain {
		return "", time.Time{}, fmt.Errorf("ca: %s is not in trust domain %s", id, c.cfg.TrustDomain)
	}
	if len(audience) == 0 {
		return "", time.Time{}, errors.New("ca: jwt-svid: audience is required")
	}
	for _, a := range audience {
		if a == "" {
			return "", time.Time{}, errors.New("ca: jwt-svid: empty audience")
		}
	}
	if ttl <= 0 {
		return "", time.Time{}, fmt.Errorf("ca: ttl %s must be positive", ttl)
	}
	c.mu.RLock()
	key := c.find(&c.st, KindJWT, StatusActive)
	c.mu.RUnlock()
	if key == nil || key.signer == nil {
		return "", time.Time{}, ErrNotReady
	}
	sig, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: cryptosigner.Opaque(key.signer), KeyID: key.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ca: jwt signer: %w", err)
	}
	now := c.cfg.Now()
	exp := now.Add(ttl)
	if exp.After(key.NotAfter) {
		exp = key.NotAfter
	}
	claims := jwt.Claims{
		Subject:  id.String(),
		Audience: jwt.Audience(audience),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(exp),
	}
	token, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ca: signing jwt-svid for %s: %w", id, err)
	}
	return token, exp.Truncate(time.Second), nil
}
