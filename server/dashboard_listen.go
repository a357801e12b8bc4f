package server

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/sigil-mesh/sigil/dashboard"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// serverSVIDSource hands the server's own SVID to the dashboard's TLS
// listener at each handshake, so renewal needs no restart.
type serverSVIDSource struct{ s *Server }

// GetX509SVID returns the server's current SVID with its chain.
func (src serverSVIDSource) GetX509SVID() (*x509svid.SVID, error) {
	cert := src.s.svid.Load()
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("server: own svid key is not a signer")
	}
	out := &x509svid.SVID{ID: naming.ServerID(src.s.cfg.td), PrivateKey: signer, Certificates: []*x509.Certificate{cert.Leaf}}
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("server: own svid chain: %w", err)
		}
		out.Certificates = append(out.Certificates, c)
	}
	return out, nil
}

// caBundleSource reads the CA's trust bundle at each handshake, so a root
// added by rotation is trusted at once.
type caBundleSource struct{ s *Server }

// GetX509BundleForTrustDomain returns the X.509 authorities of td's
// bundle; only the server's own trust domain has one.
func (src caBundleSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return src.s.ca.Bundle().GetX509BundleForTrustDomain(td)
}

// dashboardServer opens the dashboard's listener by the checked rule and
// returns the server for it; nil, nil, nil when the dashboard is off.
func (s *Server) dashboardServer(stats dashboard.StatsSource, denials dashboard.DenialsSource) (*http.Server, net.Listener, error) {
	rule := s.cfg.dashboard
	if rule.Addr == "" {
		return nil, nil, nil
	}
	h, err := dashboard.New(dashboard.Config{Stats: stats, Denials: denials, Inventory: dashboardView{s}, Splits: dashboardView{s}, Metrics: s.MetricsHandler(), Now: s.now, Log: s.log.With("part", "dashboard")})
	if err != nil {
		return nil, nil, err
	}
	lis, err := rule.Listen(serverSVIDSource{s}, caBundleSource{s})
	if err != nil {
		return nil, nil, err
	}
	// WriteTimeout bounds a stuck client; every answer is small.
	// Refused handshakes (a client without an admin SVID) are logged as
	// JSON with the rest.
	errLog := slog.NewLogLogger(s.log.With("part", "dashboard").Handler(), slog.LevelWarn)
	return &http.Server{Handler: rule.Guard(h), ErrorLog: errLog, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}, lis, nil
}

// dashboardURL is the dashboard's URL for the start-up log line, "" when
// it is off.
func dashboardURL(lis net.Listener, rule dashboard.ListenRule) string {
	if lis == nil {
		return ""
	}
	scheme := "http"
	if rule.TLS {
		scheme = "https"
	}
	return scheme + "://" + lis.Addr().String() + "/"
}
