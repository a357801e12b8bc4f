package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/internal/backoff"
	"github.com/sigil-mesh/sigil/spiffeids"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// client is the agent's connection to the server. It authenticates with
// the agent's current SVID and trusts only the server's SPIFFE ID under the
// current bundle. After the agent SVID is renewed, reset swaps in a new
// connection so later handshakes present the new certificate.
type client struct {
	addr    string
	td      spiffeid.TrustDomain
	svid    *atomic.Pointer[x509svid.SVID]
	bundles x509bundle.Source

	mu   sync.Mutex
	conn *grpc.ClientConn
}

// svidSource adapts the agent SVID pointer to go-spiffe's x509svid.Source.
type svidSource struct {
	p *atomic.Pointer[x509svid.SVID]
}

func (s svidSource) GetX509SVID() (*x509svid.SVID, error) {
	if v := s.p.Load(); v != nil {
		return v, nil
	}
	return nil, errors.New("agent: no agent SVID yet")
}

func (c *client) tlsConfig(withSVID bool) *tls.Config {
	serverID := spiffeids.Server(c.td)
	var cfg *tls.Config
	if withSVID {
		cfg = tlsconfig.MTLSClientConfig(svidSource{c.svid}, c.bundles, tlsconfig.AuthorizeID(serverID))
	} else {
		cfg = tlsconfig.TLSClientConfig(c.bundles, tlsconfig.AuthorizeID(serverID))
	}
	cfg.MinVersion = tls.VersionTLS13
	return cfg
}

func (c *client) dial(withSVID bool) (*grpc.ClientConn, error) {
	// Reconnects follow the agent's backoff (at most a few seconds), not
	// gRPC's default, which waits up to 2 minutes once a server is away.
	conn, err := grpc.NewClient("passthrough:///"+c.addr, grpc.WithTransportCredentials(credentials.NewTLS(c.tlsConfig(withSVID))),
		grpc.WithConnectParams(backoff.GRPCConnectParams()))
	if err != nil {
		return nil, fmt.Errorf("agent: dialing %s: %w", c.addr, err)
	}
	return conn, nil
}

// api returns the agent API over the current mTLS connection.
func (c *client) api() (agentv1.AgentClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		conn, err := c.dial(true)
		if err != nil {
			return nil, err
		}
		c.conn = conn
	}
	return agentv1.NewAgentClient(c.conn), nil
}

// reset drops the connection; the next call dials afresh.
func (c *client) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

func (c *client) close() { c.reset() }

// newCSR makes a P-256 key on this node and a CSR for it.
func newCSR() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: csr: %w", err)
	}
	return key, csr, nil
}

// attest trades a join token for the agent's first SVID.
func (c *client) attest(ctx context.Context, token string) (*x509svid.SVID, *agentv1.Bundle, error) {
	key, csr, err := newCSR()
	if err != nil {
		return nil, nil, err
	}
	conn, err := c.dial(false)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	resp, err := agentv1.NewAgentClient(conn).Attest(ctx, &agentv1.AttestRequest{JoinToken: token, Csr: csr})
	if err != nil {
		return nil, nil, fmt.Errorf("agent: attestation: %w", err)
	}
	svid, err := c.checkAgentSVID(resp.GetSvid(), key)
	return svid, resp.GetBundle(), err
}

// renew gets a fresh agent SVID with a new key.
func (c *client) renew(ctx context.Context) (*x509svid.SVID, error) {
	key, csr, err := newCSR()
	if err != nil {
		return nil, err
	}
	api, err := c.api()
	if err != nil {
		return nil, err
	}
	resp, err := api.RenewAgent(ctx, &agentv1.RenewAgentRequest{Csr: csr})
	if err != nil {
		return nil, fmt.Errorf("agent: renewing agent svid: %w", err)
	}
	return c.checkAgentSVID(resp.GetSvid(), key)
}

func (c *client) checkAgentSVID(p *agentv1.X509SVID, key *ecdsa.PrivateKey) (*x509svid.SVID, error) {
	var certs []*x509.Certificate
	for _, der := range p.GetCertChain() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("agent: agent svid: %w", err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("agent: agent svid: empty chain")
	}
	id, _, err := x509svid.Verify(certs, c.bundles)
	if err != nil {
		return nil, fmt.Errorf("agent: agent svid: %w", err)
	}
	if !spiffeids.IsAgent(c.td, id) {
		return nil, fmt.Errorf("agent: server issued %s, which is not an agent ID", id)
	}
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, errors.New("agent: agent svid is not for the key sent")
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// BatchNewX509SVID implements cache.Signer.
func (c *client) BatchNewX509SVID(ctx context.Context, params []*agentv1.X509SVIDParams) ([]*agentv1.X509SVIDResult, error) {
	api, err := c.api()
	if err != nil {
		return nil, err
	}
	resp, err := api.BatchNewX509SVID(ctx, &agentv1.BatchNewX509SVIDRequest{Params: params})
	if err != nil {
		return nil, err
	}
	return resp.GetResults(), nil
}

// NewJWTSVID implements cache.Signer.
func (c *client) NewJWTSVID(ctx context.Context, entryID string, audience []string) (*agentv1.NewJWTSVIDResponse, error) {
	api, err := c.api()
	if err != nil {
		return nil, err
	}
	return api.NewJWTSVID(ctx, &agentv1.NewJWTSVIDRequest{EntryId: entryID, Audience: audience})
}

// ReportProxies sends the node's sidecars to the server.
func (c *client) ReportProxies(ctx context.Context, proxies []*agentv1.Proxy) error {
	api, err := c.api()
	if err != nil {
		return err
	}
	_, err = api.ReportProxies(ctx, &agentv1.ReportProxiesRequest{Proxies: proxies})
	return err
}
