package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/dashboard"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// noTraffic stands in for the telemetry store (another package): a
// window with no traffic in it.
type noTraffic struct{}

func (noTraffic) Stats(_ context.Context, q adminv1.StatQuery) (adminv1.StatResponse, error) {
	return adminv1.StatResponse{Window: q.Window}, nil
}

func (noTraffic) Edges(_ context.Context, q adminv1.StatQuery) (adminv1.EdgesResponse, error) {
	return adminv1.EdgesResponse{Window: q.Window}, nil
}

func (noTraffic) Denials(context.Context, string, int) (adminv1.DenialsResponse, error) {
	return adminv1.DenialsResponse{}, nil
}

// caServer is storeServer with a CA and the server's own SVID.
func caServer(t *testing.T) *Server {
	t.Helper()
	s, store := storeServer(t)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	s.cfg.td, s.cfg.DefaultX509TTL = td, time.Hour
	authority, err := ca.New(context.Background(), ca.Config{TrustDomain: td, KeyDir: filepath.Join(t.TempDir(), "keys"), State: store, Audit: s.audit})
	if err != nil {
		t.Fatal(err)
	}
	s.ca = authority
	// The dashboard listener serves the server's /metrics beside the page.
	s.metrics = newMetrics(serverMetricsSource{s}, s.now, s.log)
	if err := s.renewServerSVID(); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDashboardServedWithServerSVID: with --dashboard-tls the server
// serves its own SVID (read at each handshake) and takes clients whose
// SVID its CA signed for an admin ID; in plain HTTP on loopback it
// serves the page with its Content-Security-Policy.
func TestDashboardServedWithServerSVID(t *testing.T) {
	s := caServer(t)
	admin := spiffeid.RequireFromString("spiffe://example.org/ns/ops/sa/admin")
	rule, err := dashboard.CheckListen("127.0.0.1:0", true, []string{admin.String()}, s.cfg.td)
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.dashboard = rule
	srv, lis, err := s.dashboardServer(noTraffic{}, noTraffic{})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	url := dashboardURL(lis, rule)
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("url %q", url)
	}

	svidFor := func(id spiffeid.ID) *x509svid.SVID {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		chain, err := s.ca.SignX509SVID(key.Public(), id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
	}
	get := func(id spiffeid.ID) (*http.Response, error) {
		cfg := tlsconfig.MTLSClientConfig(svidFor(id), caBundleSource{s}, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/sigil/server")))
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
		return c.Get(url + "api/identities")
	}
	res, err := get(admin)
	if err != nil {
		t.Fatalf("admin: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.TLS.Version != tls.VersionTLS13 || !strings.Contains(string(body), `"kind":"server"`) {
		t.Errorf("admin: %d %x %s", res.StatusCode, res.TLS.Version, body)
	}
	if res, err := get(spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")); err == nil {
		res.Body.Close()
		t.Errorf("a workload that is no admin got %d", res.StatusCode)
	}

	// A renewed server SVID is served at the next handshake.
	old := s.svid.Load().Leaf.SerialNumber
	if err := s.renewServerSVID(); err != nil {
		t.Fatal(err)
	}
	got, err := serverSVIDSource{s}.GetX509SVID()
	if err != nil || got.Certificates[0].SerialNumber.Cmp(old) == 0 || len(got.Certificates) < 2 {
		t.Errorf("svid source after renewal: %v %v", got, err)
	}

	s.cfg.dashboard, _ = dashboard.CheckListen("127.0.0.1:0", false, nil, s.cfg.td)
	plain, plainLis, err := s.dashboardServer(noTraffic{}, noTraffic{})
	if err != nil {
		t.Fatal(err)
	}
	go plain.Serve(plainLis)
	t.Cleanup(func() { plain.Shutdown(context.Background()) })
	res, err = http.Get(dashboardURL(plainLis, s.cfg.dashboard))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("plain: %d %v", res.StatusCode, res.Header)
	}

	s.cfg.dashboard = dashboard.ListenRule{}
	if srv, lis, err := s.dashboardServer(noTraffic{}, noTraffic{}); srv != nil || lis != nil || err != nil {
		t.Errorf("--dashboard \"\": %v %v %v", srv, lis, err)
	}
}
