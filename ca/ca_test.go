package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

type memState struct {
	mu  sync.Mutex
	raw []byte
}

func (m *memState) LoadCAState(context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.raw, nil
}

func (m *memState) SaveCAState(_ context.Context, b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.raw = b
	return nil
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var td = spiffeid.RequireTrustDomainFromString("example.org")

func newTestCA(t *testing.T, clk *fakeClock, st *memState, dir string) *CA {
	t.Helper()
	log, err := audit.Open(filepath.Join(dir, "audit.log"), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	c, err := New(context.Background(), Config{
		TrustDomain: td, KeyDir: filepath.Join(dir, "keys"), State: st, Audit: log,
		RootTTL: 60 * time.Hour, CATTL: 6 * time.Hour, Now: clk.Now, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestX509SVIDProfile(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	dir := t.TempDir()
	c := newTestCA(t, clk, &memState{}, dir)
	id := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	key := newKey(t)
	chain, err := c.SignX509SVID(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Fatalf("URIs = %v", leaf.URIs)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Fatal("leaf must carry basic constraints with CA false")
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Fatalf("key usage %v", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 {
		t.Fatalf("eku %v", leaf.ExtKeyUsage)
	}
	if got := leaf.NotAfter.Sub(clk.Now()); got > time.Hour || got < time.Hour-time.Second {
		t.Fatalf("ttl %s", got)
	}
	gotID, _, err := x509svid.Verify(chain, c.Bundle().X509Bundle(), x509svid.WithTime(clk.Now()))
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if gotID != id {
		t.Fatalf("id %s", gotID)
	}
	// Parsing as an SVID (go-spiffe's spec checks) must pass too.
	if _, err := x509svid.ParseRaw(append(leaf.Raw, chain[1].Raw...), mustPKCS8(t, key)); err != nil {
		t.Fatalf("x509svid.ParseRaw: %v", err)
	}
	// SVIDs never outlive the intermediate.
	chain, err = c.SignX509SVID(key.Public(), id, 1000*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !chain[0].NotAfter.Equal(chain[1].NotAfter) {
		t.Fatalf("svid %s outlives intermediate %s", chain[0].NotAfter, chain[1].NotAfter)
	}
	if _, err := c.SignX509SVID(key.Public(), spiffeid.RequireFromString("spiffe://other.org/x"), time.Hour); err == nil {
		t.Fatal("signed an id of another trust domain")
	}
	// Keys are 0600.
	files, _ := filepath.Glob(filepath.Join(dir, "keys", "*.key"))
	if len(files) != 3 {
		t.Fatalf("want 3 key files (root, intermediate, jwt), got %v", files)
	}
	for _, f := range files {
		st, _ := os.Stat(f)
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", f, st.Mode().Perm())
		}
	}
}

func mustPKCS8(t *testing.T, k *ecdsa.PrivateKey) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJWTSVID(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	c := newTestCA(t, clk, &memState{}, t.TempDir())
	id := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	tok, exp, err := c.SignJWTSVID(id, []string{"api"}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if d := exp.Sub(clk.Now()); d > 5*time.Minute || d < 4*time.Minute {
		t.Fatalf("expiry in %s", d)
	}
	svid, err := jwtsvid.ParseAndValidate(tok, c.Bundle().JWTBundle(), []string{"api"})
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != id {
		t.Fatalf("id %s", svid.ID)
	}
	if _, err := jwtsvid.ParseAndValidate(tok, c.Bundle().JWTBundle(), []string{"other"}); err == nil {
		t.Fatal("validated for the wrong audience")
	}
	if _, _, err := c.SignJWTSVID(id, nil, time.Minute); err == nil {
		t.Fatal("signed without audience")
	}
}

// TestRotation walks the clock through two intermediate lifetimes and a
// root lifetime and checks that every SVID verifies against the bundle the
// relying party held before the SVID was signed.
func TestRotation(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	st := &memState{}
	dir := t.TempDir()
	c := newTestCA(t, clk, st, dir)
	ctx := context.Background()
	id := spiffeid.RequireFromString("spiffe://example.org/w")
	key := newKey(t)
	held := c.Bundle()
	seq0, _ := held.SequenceNumber()
	var sawPrepared, sawRootRotation bool
	firstRoot := held.X509Authorities()[0]
	for step := 0; step < 70*4; step++ { // 70 hours in 15-minute steps
		clk.Add(15 * time.Minute)
		changed, err := c.Rotate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		chain, err := c.SignX509SVID(key.Public(), id, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := x509svid.Verify(chain, held.X509Bundle(), x509svid.WithTime(clk.Now())); err != nil {
			t.Fatalf("at %s an SVID does not verify against the bundle held before it was signed: %v", clk.Now(), err)
		}
		tok, _, err := c.SignJWTSVID(id, []string{"a"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jwtsvid.ParseAndValidate(tok, held.JWTBundle(), []string{"a"}); err != nil {
			// JWT validation uses the wall clock; only the key lookup matters here.
			if strings.Contains(err.Error(), "key") {
				t.Fatalf("at %s a JWT-SVID's key is not in the bundle held before: %v", clk.Now(), err)
			}
		}
		if changed {
			held = c.Bundle()
			if len(held.X509Authorities()) > 1 {
				sawPrepared = true
			}
		}
		if chain[1].CheckSignatureFrom(firstRoot) != nil {
			sawRootRotation = true
		}
	}
	seq1, _ := held.SequenceNumber()
	if !sawPrepared || !sawRootRotation || seq1 <= seq0 {
		t.Fatalf("prepared root seen %v, root rotation seen %v, sequence %d→%d", sawPrepared, sawRootRotation, seq0, seq1)
	}
	// A restart loads the same state and keeps signing.
	c2 := newTestCA(t, clk, st, dir)
	if _, err := c2.SignX509SVID(key.Public(), id, time.Minute); err != nil {
		t.Fatal(err)
	}
	if s2, _ := c2.Bundle().SequenceNumber(); s2 != seq1 {
		t.Fatalf("sequence after restart %d, want %d", s2, seq1)
	}
	// Expired keys were removed from disk.
	files, _ := filepath.Glob(filepath.Join(dir, "keys", "*.key"))
	if len(files) > 6 {
		t.Fatalf("%d key files kept; expired ones should be removed", len(files))
	}
	data, _ := os.ReadFile(filepath.Join(dir, "audit.log"))
	if _, err := audit.Verify(strings.NewReader(string(data))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), audit.CAActivated) || !strings.Contains(string(data), audit.CARootCreated) {
		t.Fatal("rotation not audited")
	}
}

func TestParseCSR(t *testing.T) {
	good := csrDER(t, newKey(t))
	if _, err := ParseCSR(good); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), good...)
	bad[len(bad)-5] ^= 0xff
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for name, der := range map[string][]byte{
		"empty": nil, "garbage": []byte("hello"), "bad signature": bad,
		"small rsa": csrDER(t, rsaKey), "huge": make([]byte, MaxCSRSize+1),
	} {
		if _, err := ParseCSR(der); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func csrDER(t testing.TB, key any) []byte {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func FuzzParseCSR(f *testing.F) {
	f.Add(csrDER(f, newKey(f)))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := ParseCSR(der)
		if err == nil && checkKey(pub) != "" {
			t.Fatal("ParseCSR returned a key checkKey refuses")
		}
	})
}

func TestUpstream(t *testing.T) {
	// An upstream root made by another instance of the CA stands in for an
	// existing PKI.
	clk := &fakeClock{t: time.Now()}
	upDir := t.TempDir()
	up := newTestCA(t, clk, &memState{}, upDir)
	up.mu.RLock()
	root := up.find(&up.st, KindRoot, StatusActive)
	up.mu.RUnlock()
	u := &Upstream{Chain: []*x509.Certificate{root.cert}, Signer: root.signer}
	if err := u.check(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log, _ := audit.Open(filepath.Join(dir, "audit.log"), clk.Now)
	defer log.Close()
	c, err := New(context.Background(), Config{TrustDomain: td, KeyDir: dir, State: &memState{}, Audit: log, Upstream: u, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := c.SignX509SVID(newKey(t).Public(), spiffeid.RequireFromString("spiffe://example.org/w"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := c.Bundle()
	if len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(root.cert) {
		t.Fatal("bundle is not the upstream root")
	}
	if _, _, err := x509svid.Verify(chain, b.X509Bundle()); err != nil {
		t.Fatal(err)
	}
	u.Signer = newKey(t)
	if err := u.check(); err == nil {
		t.Fatal("mismatched upstream key accepted")
	}
}
