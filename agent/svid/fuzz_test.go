package svid

import (
	"bytes"
	"crypto/x509"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzParseBundle: whatever the server sends as a bundle is taken whole
// or refused with an error, never a panic, and a bundle taken has roots.
func FuzzParseBundle(f *testing.F) {
	ca := newTestCA(f, "example.org")
	f.Add("example.org", ca.cert.Raw, []byte(`{"keys":[]}`), int64(1))
	f.Add("example.org", []byte{0x30, 0x03, 0x02, 0x01, 0x01}, []byte(`{"keys":[{"kty":"EC"}]}`), int64(-1))
	f.Add("evil.org", ca.cert.Raw, []byte(`{`), int64(0))
	td := spiffeid.RequireTrustDomainFromString("example.org")
	f.Fuzz(func(t *testing.T, domain string, root, jwks []byte, seq int64) {
		b, err := ParseBundle(td, &agentv1.Bundle{TrustDomain: domain, X509Authorities: [][]byte{root}, Jwks: jwks, Sequence: seq})
		if err == nil && (len(b.X509Authorities()) != 1 || domain != td.Name()) {
			t.Fatalf("bundle for %q taken with %d roots", domain, len(b.X509Authorities()))
		}
	})
}

// FuzzVerifyChain: a chain the server sends, cut anywhere or altered, is
// an SVID of the expected ID under the bundle or an error, never a panic.
func FuzzVerifyChain(f *testing.F) {
	ca := newTestCA(f, "example.org")
	key, _, err := NewKeyAndCSR()
	if err != nil {
		f.Fatal(err)
	}
	leaf := ca.leaf(f, "spiffe://example.org/sigil/agent/join_token/node1", &key.PublicKey, time.Now())
	f.Add(leaf, []byte(nil))
	f.Add(leaf, ca.cert.Raw)
	f.Add(leaf[:len(leaf)/2], []byte{0x30})
	td := spiffeid.RequireTrustDomainFromString("example.org")
	bundles := x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.cert})
	f.Fuzz(func(t *testing.T, first, second []byte) {
		chain := [][]byte{first}
		if second != nil {
			chain = append(chain, second)
		}
		s, err := VerifyChain(chain, key, bundles, time.Now(), AgentOf(td))
		if err == nil && !bytes.Equal(s.Certificates[0].Raw, first) {
			t.Fatal("an SVID whose leaf is not the one sent")
		}
	})
}
