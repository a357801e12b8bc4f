// Package ca is Sigil's certificate authority: it keeps the root (or takes
// one from an upstream PKI), signs with an intermediate that it rotates
// before expiry, and issues X.509-SVIDs and JWT-SVIDs.
//
// Rotation follows SPIRE's schedule: the next intermediate, JWT key or root
// is prepared at half of the current one's life and published in the trust
// bundle at once, and becomes active at five sixths of it. Anything a relying
// party must trust is therefore in the bundle it already holds before the
// first certificate or token signed with it exists.
//
// Keys are made and held through go.step.sm/crypto's KMS interface; the
// built-in default, softkms, keeps each key in a 0600 PEM file in the data
// directory.
//
// Typical use:
//
//	authority, err := ca.New(ctx, ca.Config{TrustDomain: td, KeyDir: dir, State: store, Audit: log})
//	chain, err := authority.SignX509SVID(csr, id, time.Hour)
//	token, err := authority.SignJWTSVID(id, []string{"api"}, 5*time.Minute)
package ca
