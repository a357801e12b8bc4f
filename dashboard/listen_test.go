package dashboard

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// TestDashboardListenRule: plain HTTP only on loopback; anything else
// needs TLS and admin IDs of the trust domain; flags that would be
// ignored are refused.
func TestDashboardListenRule(t *testing.T) {
	admin := "spiffe://example.org/ns/ops/sa/admin"
	tests := []struct {
		addr    string
		tls     bool
		ids     []string
		wantErr string
	}{
		{addr: "", wantErr: ""},
		{addr: "127.0.0.1:8080"},
		{addr: "127.1.2.3:0"},
		{addr: "[::1]:8080"},
		{addr: "localhost:8080"},
		{addr: "0.0.0.0:8080", wantErr: "--dashboard-tls"},
		{addr: ":8080", wantErr: "--dashboard-tls"},
		{addr: "[::]:8080", wantErr: "--dashboard-tls"},
		{addr: "10.0.0.5:8080", wantErr: "--dashboard-tls"},
		{addr: "dashboard.example.org:8080", wantErr: "--dashboard-tls"},
		{addr: "127.0.0.1", wantErr: "--dashboard"},
		{addr: "0.0.0.0:8443", tls: true, ids: []string{admin}},
		{addr: "127.0.0.1:8443", tls: true, ids: []string{admin}},
		{addr: "0.0.0.0:8443", tls: true, wantErr: "at least one --dashboard-admin-id"},
		{addr: "0.0.0.0:8443", tls: true, ids: []string{"spiffe://other.org/ns/ops/sa/admin"}, wantErr: "not in trust domain"},
		{addr: "0.0.0.0:8443", tls: true, ids: []string{"admin"}, wantErr: "--dashboard-admin-id"},
		{addr: "127.0.0.1:8080", ids: []string{admin}, wantErr: "needs --dashboard-tls"},
		{addr: "", tls: true, ids: []string{admin}, wantErr: "need a --dashboard address"},
	}
	for _, tt := range tests {
		rule, err := CheckListen(tt.addr, tt.tls, tt.ids, td)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%q tls=%v ids=%v: %v", tt.addr, tt.tls, tt.ids, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%q tls=%v ids=%v: error %v, want one naming %q", tt.addr, tt.tls, tt.ids, err, tt.wantErr)
		case err == nil && tt.tls && len(rule.Admins) != len(tt.ids):
			t.Errorf("%q: admins %v", tt.addr, rule.Admins)
		}
	}
	if _, err := CheckListen("0.0.0.0:8080", false, nil, td); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("want ErrNotLoopback, got %v", err)
	}
}

// TestDashboardDNSRebindingGuard: on loopback in plain HTTP, a request
// whose Host is a name a web page could point at 127.0.0.1 is refused;
// over TLS the admin SVID decides.
func TestDashboardDNSRebindingGuard(t *testing.T) {
	stats, inv := meshFixture()
	plain, _ := CheckListen("127.0.0.1:8080", false, nil, td)
	h := plain.Guard(newTestHandler(t, stats, inv))
	for _, tt := range []struct {
		host string
		code int
	}{
		{"127.0.0.1:8080", http.StatusOK},
		{"localhost:8080", http.StatusOK},
		{"[::1]:8080", http.StatusOK},
		{"127.0.0.1", http.StatusOK},
		{"evil.example:8080", http.StatusForbidden},
		{"evil.example", http.StatusForbidden},
		{"127.0.0.1.nip.io:8080", http.StatusForbidden},
		{"", http.StatusForbidden},
	} {
		req := httptest.NewRequest(http.MethodGet, "/api/overview", nil)
		req.Host = tt.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tt.code {
			t.Errorf("Host %q: %d, want %d", tt.host, rec.Code, tt.code)
		}
	}
	withTLS, _ := CheckListen("0.0.0.0:8443", true, []string{"spiffe://example.org/ns/ops/sa/admin"}, td)
	req := httptest.NewRequest(http.MethodGet, "/api/overview", nil)
	req.Host = "dashboard.example.org:8443"
	rec := httptest.NewRecorder()
	withTLS.Guard(newTestHandler(t, stats, inv)).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("TLS, named host: %d", rec.Code)
	}
}

// testCA is a root that signs X.509-SVIDs, as the server's CA would.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (c *testCA) svid(t *testing.T, id string, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sid := spiffeid.RequireFromString(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
		URIs: []*url.URL{sid.URL()}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: sid, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

func (s *fakeSVID) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

type fakeSVID struct{ svid *x509svid.SVID }

// TestDashboardTLSAdminOnly: over TLS the dashboard answers only a client
// whose SVID chains to the bundle, is within its validity and carries an
// admin ID.
func TestDashboardTLSAdminOnly(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	admin := "spiffe://example.org/ns/ops/sa/admin"
	rule, err := CheckListen("127.0.0.1:0", true, []string{admin}, td)
	if err != nil {
		t.Fatal(err)
	}
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.cert})
	lis, err := rule.Listen(&fakeSVID{ca.svid(t, "spiffe://example.org/sigil/server", time.Now().Add(time.Hour))}, bundle)
	if err != nil {
		t.Fatal(err)
	}
	stats, inv := meshFixture()
	srv := &http.Server{Handler: newTestHandler(t, stats, inv), ErrorLog: nil}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	client := func(s *x509svid.SVID) *http.Client {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots,
			// The server presents its SVID (a URI SAN, no DNS name): check
			// the chain here and the ID below, as a SPIFFE client does.
			InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				c, err := x509.ParseCertificate(raw[0])
				if err != nil {
					return err
				}
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
					return err
				}
				if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org/sigil/server" {
					return errors.New("not the server")
				}
				return nil
			}}
		if s != nil {
			cert := tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
			for _, c := range s.Certificates {
				cert.Certificate = append(cert.Certificate, c.Raw)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	}
	url := "https://" + lis.Addr().String() + "/api/overview"
	tests := []struct {
		name string
		svid *x509svid.SVID
		ok   bool
	}{
		{"admin SVID", ca.svid(t, admin, time.Now().Add(time.Hour)), true},
		{"no client certificate", nil, false},
		{"SVID of another identity", ca.svid(t, "spiffe://example.org/ns/default/sa/web", time.Now().Add(time.Hour)), false},
		{"expired admin SVID", ca.svid(t, admin, time.Now().Add(-time.Minute)), false},
		{"admin ID from another CA", other.svid(t, admin, time.Now().Add(time.Hour)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := client(tt.svid).Get(url)
			if tt.ok {
				if err != nil {
					t.Fatalf("admin refused: %v", err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK || res.TLS.Version != tls.VersionTLS13 || !strings.Contains(string(body), `"rows"`) {
					t.Errorf("status %d version %x body %s", res.StatusCode, res.TLS.Version, body)
				}
				return
			}
			if err == nil {
				res.Body.Close()
				t.Fatalf("answered with %d, want the handshake refused", res.StatusCode)
			}
		})
	}
}
