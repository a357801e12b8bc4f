package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sigil-mesh/sigil/internal/backoff"
	"github.com/sigil-mesh/sigil/policy"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// ALPN protocols between sidecars. Opaque TCP gets its own name so the
// inbound side knows to pipe bytes instead of parsing HTTP.
const (
	alpnH2  = "h2"
	alpnH1  = "http/1.1"
	alpnTCP = "sigil-tcp"
	tls13   = "TLSv1.3"
	hsLimit = 10 * time.Second
)

// identity is the proxy's SVID and bundle from the agent's Workload API.
// go-spiffe's X509Source follows the Workload API stream, so renewed SVIDs
// and bundles are picked up by the next handshake with nothing to restart.
type identity struct {
	src *workloadapi.X509Source
	id  spiffeid.ID
}

// reconnects puts go-spiffe's Workload API client on Sigil's backoff
// schedule (its own climbs linearly to 30 s), so a sidecar is back on its
// agent within seconds of the agent's return.
type reconnects struct{}

func (reconnects) NewBackoff() workloadapi.Backoff { return &backoff.Backoff{} }

func newIdentity(ctx context.Context, socket string) (*identity, error) {
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+socket), workloadapi.WithBackoffStrategy(reconnects{})))
	if err != nil {
		return nil, fmt.Errorf("proxy: workload api %s: %w", socket, err)
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		src.Close()
		return nil, fmt.Errorf("proxy: svid: %w", err)
	}
	return &identity{src: src, id: svid.ID}, nil
}

func (i *identity) close() { i.src.Close() }

// notAfter is when the current SVID expires (zero if there is none).
func (i *identity) notAfter() time.Time {
	svid, err := i.src.GetX509SVID()
	if err != nil {
		return time.Time{}
	}
	return svid.Certificates[0].NotAfter
}

// notReady says why the SVID cannot serve at now ("" when it can): a
// sidecar whose SVID expired fails every handshake, so it is not ready.
func (i *identity) notReady(now time.Time) string {
	t := i.notAfter()
	if t.IsZero() || now.Before(t) {
		return ""
	}
	return fmt.Sprintf("svid expired at %s (%s ago) and the agent has not renewed it: see the agent's log and its /ready", t.UTC().Format(time.RFC3339), now.Sub(t).Round(time.Second))
}

func (i *identity) expiresIn() float64 {
	t := i.notAfter()
	if t.IsZero() {
		return 0
	}
	return time.Until(t).Seconds()
}

// serverTLS requires a client SVID of our trust domain that chains to the
// bundle and has not expired; TLS 1.3 only.
func (i *identity) serverTLS(onFail func(error)) *tls.Config {
	cfg := tlsconfig.MTLSServerConfig(i.src, i.src, tlsconfig.AuthorizeMemberOf(i.id.TrustDomain()))
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{alpnH2, alpnH1, alpnTCP}
	verify := cfg.VerifyPeerCertificate
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		err := verify(raw, chains)
		if err != nil {
			if onFail != nil {
				onFail(err)
			}
			return verifyError{err}
		}
		return nil
	}
	return cfg
}

// verifyError marks a handshake that failed on the peer's certificate
// (chain, expiry or ID), as opposed to the transport.
type verifyError struct{ error }

func (e verifyError) Unwrap() error { return e.error }

func verifyFailed(err error) bool {
	var v verifyError
	return errors.As(err, &v)
}

// clientTLS checks that the peer sidecar is who the destination service
// may be (secure naming): want, or any member of the trust domain. sni is
// the server name the ClientHello carries (a DestinationRule's
// ISTIO_MUTUAL tls.sni; "" sends none): it selects nothing on the peer's
// side, whose SPIFFE ID alone is checked.
func (i *identity) clientTLS(want spiffeid.ID, alpn, sni string) *tls.Config {
	auth := tlsconfig.AuthorizeMemberOf(i.id.TrustDomain())
	if !want.IsZero() {
		auth = tlsconfig.AuthorizeID(want)
	}
	cfg := tlsconfig.MTLSClientConfig(i.src, i.src, auth)
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{alpn}
	cfg.ServerName = sni
	return cfg
}

// peerID returns the verified SPIFFE ID of a TLS peer.
func peerID(cs *tls.ConnectionState) (spiffeid.ID, *x509.Certificate, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, nil, fmt.Errorf("proxy: no peer certificate")
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	return id, cs.PeerCertificates[0], err
}

// xfcc formats the caller's identity as Envoy and Istio do:
// By=<our ID>;Hash=<SHA-256 of the peer's certificate>;URI=<peer ID>.
func xfcc(by, peer spiffeid.ID, cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "By=" + by.String() + ";Hash=" + hex.EncodeToString(sum[:]) + ";URI=" + peer.String()
}

// peer is what the inbound side derives from a verified client
// certificate: its ID, the policy's view of it and the XFCC value.
type peer struct {
	id     string
	source policy.Peer
	xfcc   string
}

// peerCache keeps a peer per client certificate: the ID is parsed and the
// XFCC hash computed once per certificate instead of per request (a
// visible share of the inbound side's CPU at saturation: bench/README.md).
// Keyed by the certificate's
// bytes, so every connection of one SVID shares an entry.
type peerCache struct {
	mu sync.RWMutex
	m  map[string]*peer
}

// maxPeers bounds the cache; beyond it, it starts afresh.
const maxPeers = 256

func (c *peerCache) of(self spiffeid.ID, cs *tls.ConnectionState) (*peer, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return nil, fmt.Errorf("proxy: no peer certificate")
	}
	cert := cs.PeerCertificates[0]
	c.mu.RLock()
	p, ok := c.m[string(cert.Raw)]
	c.mu.RUnlock()
	if ok {
		return p, nil
	}
	id, _, err := peerID(cs)
	if err != nil {
		return nil, err
	}
	p = &peer{id: id.String(), source: policy.PeerFromID(id.String()), xfcc: xfcc(self, id, cert)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxPeers {
		c.m = map[string]*peer{}
	}
	c.m[string(cert.Raw)] = p
	return p, nil
}
