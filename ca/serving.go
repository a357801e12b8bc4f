package ca

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/naming"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxServingNames bounds the DNS and IP SANs of one serving certificate.
const MaxServingNames = 16

// SignServingCert signs a TLS serving certificate for a server of the
// mesh itself (sigil-server's admission webhook): an X.509-SVID for id, as
// SignX509SVID makes it, that also carries DNS and IP SANs so that a
// client that checks host names (the Kubernetes API server calling
// https://sigil-server.NS.svc) accepts it. The X509-SVID specification
// (§2) allows SANs of other types beside the one URI SAN. Only IDs of
// the server itself (naming.ServerID) are signed here, so this path
// never mints a workload identity; DNS names must be plain DNS-1123
// subdomains (no wildcards), and at least one name is required.
func (c *CA) SignServingCert(pub crypto.PublicKey, id spiffeid.ID, hosts []string, ttl time.Duration) ([]*x509.Certificate, error) {
	if id != naming.ServerID(c.cfg.TrustDomain) {
		return nil, fmt.Errorf("ca: serving certificate for %s: only the server's own ID %s is allowed", id, naming.ServerID(c.cfg.TrustDomain))
	}
	if len(hosts) == 0 || len(hosts) > MaxServingNames {
		return nil, fmt.Errorf("ca: serving certificate: %d host names, want 1 to %d", len(hosts), MaxServingNames)
	}
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if strings.HasSuffix(h, ".") || !naming.ValidName(h) {
			return nil, fmt.Errorf("ca: serving certificate: host %s is neither an IP address nor a DNS name", naming.Quote(h))
		}
		dns = append(dns, h)
	}
	return c.signSVID(pub, id, dns, ips, ttl)
}
