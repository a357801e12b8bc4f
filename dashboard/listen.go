package dashboard

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// DefaultAddr is where the dashboard listens unless told otherwise
// (DESIGN.md: the server's web dashboard and /metrics).
const DefaultAddr = "127.0.0.1:8080"

// ErrNotLoopback is returned by CheckListen for an address off the
// loopback interface without TLS.
var ErrNotLoopback = errors.New("dashboard: a dashboard address off loopback needs --dashboard-tls and at least one --dashboard-admin-id")

// ListenRule is a checked --dashboard, --dashboard-tls and
// --dashboard-admin-id.
type ListenRule struct {
	// Addr is HOST:PORT; "" means no dashboard.
	Addr string
	// TLS is set when clients must present an admin SVID.
	TLS bool
	// Admins are the SPIFFE IDs allowed in when TLS is set.
	Admins []spiffeid.ID
}

// CheckListen checks the dashboard's flags: an address on loopback
// (127.0.0.0/8, ::1 or localhost) may be served in plain HTTP; any other
// (a wildcard such as :8080 or 0.0.0.0 included) only with TLS, and TLS
// needs at least one admin ID, each in trust domain td (the bundle the
// client's SVID must chain to is td's). Admin IDs without TLS are refused,
// not ignored. Errors name the flag.
func CheckListen(addr string, useTLS bool, adminIDs []string, td spiffeid.TrustDomain) (ListenRule, error) {
	rule := ListenRule{Addr: addr, TLS: useTLS}
	if addr == "" {
		if useTLS || len(adminIDs) > 0 {
			return rule, errors.New("dashboard: --dashboard-tls and --dashboard-admin-id need a --dashboard address")
		}
		return rule, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return rule, fmt.Errorf("dashboard: --dashboard %q: %w", addr, err)
	}
	if !useTLS {
		if len(adminIDs) > 0 {
			return rule, errors.New("dashboard: --dashboard-admin-id needs --dashboard-tls")
		}
		if !isLoopback(host) {
			return rule, fmt.Errorf("%w (--dashboard %q)", ErrNotLoopback, addr)
		}
		return rule, nil
	}
	if len(adminIDs) == 0 {
		return rule, errors.New("dashboard: --dashboard-tls needs at least one --dashboard-admin-id (the SPIFFE IDs allowed in)")
	}
	for _, s := range adminIDs {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return rule, fmt.Errorf("dashboard: --dashboard-admin-id %q: %w", s, err)
		}
		if id.TrustDomain() != td {
			return rule, fmt.Errorf("dashboard: --dashboard-admin-id %q: not in trust domain %s, whose bundle client SVIDs are checked against", s, td)
		}
		rule.Admins = append(rule.Admins, id)
	}
	return rule, nil
}

// isLoopback reports whether host names only the loopback interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Listen opens the rule's listener: plain TCP, or TLS 1.3 serving svid
// and demanding a client X.509-SVID that chains to bundle's authorities
// for its trust domain, is within its validity period and carries one of
// the rule's admin IDs (go-spiffe's tlsconfig does all three). svid and
// bundle are read at each handshake, so rotation needs no restart.
func (r ListenRule) Listen(svid x509svid.Source, bundle x509bundle.Source) (net.Listener, error) {
	lis, err := net.Listen("tcp", r.Addr)
	if err != nil {
		return nil, fmt.Errorf("dashboard: --dashboard %s: %w", r.Addr, err)
	}
	if !r.TLS {
		return lis, nil
	}
	return tls.NewListener(lis, r.TLSConfig(svid, bundle)), nil
}

// TLSConfig is the server side of the dashboard's mutual TLS.
func (r ListenRule) TLSConfig(svid x509svid.Source, bundle x509bundle.Source) *tls.Config {
	cfg := tlsconfig.MTLSServerConfig(svid, bundle, tlsconfig.AuthorizeOneOf(r.Admins...))
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{"http/1.1"}
	return cfg
}

// Guard wraps the dashboard's handler for this rule. Served in plain HTTP
// on loopback, it answers only requests whose Host is a loopback address
// or localhost: a web page elsewhere that rebinds its own name to
// 127.0.0.1 (DNS rebinding) would otherwise read the dashboard through
// the user's browser. Over TLS the client's admin SVID already decides.
func (r ListenRule) Guard(h http.Handler) http.Handler {
	if r.TLS {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		host := req.Host
		if hp, _, err := net.SplitHostPort(host); err == nil {
			host = hp
		}
		if !isLoopback(strings.Trim(host, "[]")) {
			http.Error(w, fmt.Sprintf("dashboard: Host %q is not a loopback address; open the dashboard as http://127.0.0.1:PORT/ or http://localhost:PORT/", req.Host), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, req)
	})
}
