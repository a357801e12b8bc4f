package svid

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// testCA is a root that signs leaves with a SPIFFE ID.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t testing.TB, td string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: td}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) certs() []*x509.Certificate { return []*x509.Certificate{ca.cert} }

// leaf signs pub for id, valid from notBefore for an hour.
func (ca *testCA) leaf(t testing.TB, id string, pub *ecdsa.PublicKey, notBefore time.Time) []byte {
	t.Helper()
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: notBefore, NotAfter: notBefore.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestVerifyChainOneCheckForEverySVID: the agent's own SVID and every
// workload SVID pass the same check — chain to the bundle, valid now,
// the SPIFFE ID expected, for the key sent — and each refusal says why.
func TestVerifyChainOneCheckForEverySVID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca, other := newTestCA(t, "example.org"), newTestCA(t, "example.org")
	bundles := x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.cert})
	key, _, err := NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _, _ := NewKeyAndCSR()
	const workload = "spiffe://example.org/ns/default/sa/web"
	const agent = "spiffe://example.org/sigil/agent/join_token/node1"
	now := time.Now()
	for name, tc := range map[string]struct {
		chain   [][]byte
		now     time.Time
		want    WantID
		wantErr string
	}{
		"workload":          {chain: [][]byte{ca.leaf(t, workload, &key.PublicKey, now)}, want: Exactly(spiffeid.RequireFromString(workload))},
		"agent":             {chain: [][]byte{ca.leaf(t, agent, &key.PublicKey, now)}, want: AgentOf(td)},
		"another workload":  {chain: [][]byte{ca.leaf(t, workload, &key.PublicKey, now)}, want: Exactly(spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/api")), wantErr: "want spiffe://example.org/ns/default/sa/api"},
		"workload as agent": {chain: [][]byte{ca.leaf(t, workload, &key.PublicKey, now)}, want: AgentOf(td), wantErr: "not an agent ID"},
		"other root":        {chain: [][]byte{other.leaf(t, workload, &key.PublicKey, now)}, want: Exactly(spiffeid.RequireFromString(workload)), wantErr: "x509svid"},
		"expired":           {chain: [][]byte{ca.leaf(t, workload, &key.PublicKey, now.Add(-2*time.Hour))}, want: Exactly(spiffeid.RequireFromString(workload)), wantErr: "expired"},
		"not yet valid":     {chain: [][]byte{ca.leaf(t, workload, &key.PublicKey, now.Add(2*time.Hour))}, want: Exactly(spiffeid.RequireFromString(workload)), wantErr: "not yet valid"},
		"other key":         {chain: [][]byte{ca.leaf(t, workload, &otherKey.PublicKey, now)}, want: Exactly(spiffeid.RequireFromString(workload)), wantErr: "not for the key sent"},
		"empty":             {want: AgentOf(td), wantErr: "empty chain"},
		"garbage":           {chain: [][]byte{[]byte("not DER")}, want: AgentOf(td), wantErr: "certificate 0"},
	} {
		t.Run(name, func(t *testing.T) {
			at := tc.now
			if at.IsZero() {
				at = now.Add(time.Minute)
			}
			got, err := VerifyChain(tc.chain, key, bundles, at, tc.want)
			if tc.wantErr == "" {
				if err != nil || got.PrivateKey != key || got.Certificates[0].Raw == nil {
					t.Fatalf("VerifyChain: %v, %v", got, err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), "svid: ") || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("VerifyChain error %v, want one starting %q that says %q", err, "svid: ", tc.wantErr)
			}
		})
	}
}

// TestParseBundleRefusesWhatIsNotTheTrustDomainsBundle: the bundle from the
// server is taken only for the agent's trust domain and with roots that
// parse.
func TestParseBundleRefusesWhatIsNotTheTrustDomainsBundle(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca := newTestCA(t, "example.org")
	jwks := []byte(`{"keys":[]}`)
	for name, tc := range map[string]struct {
		in      *agentv1.Bundle
		wantErr string
	}{
		"ok":           {in: &agentv1.Bundle{TrustDomain: "example.org", X509Authorities: [][]byte{ca.cert.Raw}, Jwks: jwks, Sequence: 3}},
		"nil":          {wantErr: "want example.org"},
		"other domain": {in: &agentv1.Bundle{TrustDomain: "evil.org", X509Authorities: [][]byte{ca.cert.Raw}}, wantErr: "want example.org"},
		"no roots":     {in: &agentv1.Bundle{TrustDomain: "example.org", Jwks: jwks}, wantErr: "without roots"},
		"bad root":     {in: &agentv1.Bundle{TrustDomain: "example.org", X509Authorities: [][]byte{[]byte("x")}, Jwks: jwks}, wantErr: "bundle root 0"},
		"bad jwks":     {in: &agentv1.Bundle{TrustDomain: "example.org", X509Authorities: [][]byte{ca.cert.Raw}, Jwks: []byte("{")}, wantErr: "jwks"},
	} {
		t.Run(name, func(t *testing.T) {
			b, err := ParseBundle(td, tc.in)
			if tc.wantErr == "" {
				if err != nil || len(b.X509Authorities()) != 1 || b.TrustDomain() != td {
					t.Fatalf("ParseBundle: %v, %v", b, err)
				}
				if seq, _ := b.SequenceNumber(); seq != 3 {
					t.Fatalf("sequence %d, want 3", seq)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), "svid: ") || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseBundle error %v, want one that says %q", err, tc.wantErr)
			}
		})
	}
}
