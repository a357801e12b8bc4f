package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/sigil-mesh/sigil/agent/svid"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/internal/backoff"
	"github.com/sigil-mesh/sigil/naming"
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
// connection so later handshakes present the new certificate. With several
// server replicas it talks to one and moves on failure (servers.go).
type client struct {
	servers *servers
	log     *slog.Logger
	td      spiffeid.TrustDomain
	svid    *atomic.Pointer[x509svid.SVID]
	bundles x509bundle.Source

	mu       sync.Mutex
	conn     *grpc.ClientConn
	connAddr string // the replica conn goes to
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
	serverID := naming.ServerID(c.td)
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
	return c.dialTo(c.servers.current(), withSVID)
}

func (c *client) dialTo(addr string, withSVID bool) (*grpc.ClientConn, error) {
	// Reconnects follow the agent's backoff (at most a few seconds), not
	// gRPC's default, which waits up to 2 minutes once a server is away.
	conn, err := grpc.NewClient(passthrough+addr, grpc.WithTransportCredentials(credentials.NewTLS(c.tlsConfig(withSVID))),
		grpc.WithConnectParams(backoff.GRPCConnectParams()),
		grpc.WithChainUnaryInterceptor(c.failoverUnary(withSVID)), grpc.WithChainStreamInterceptor(c.failoverStream))
	if err != nil {
		return nil, fmt.Errorf("agent: dialing %s: %w", addr, err)
	}
	return conn, nil
}

// api returns the agent API over the current mTLS connection.
func (c *client) api() (agentv1.AgentClient, error) {
	conn, err := c.current()
	if err != nil {
		return nil, err
	}
	return agentv1.NewAgentClient(conn), nil
}

// current returns the current mTLS connection, dialling it if need be.
func (c *client) current() (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		conn, err := c.dial(true)
		if err != nil {
			return nil, err
		}
		c.conn, c.connAddr = conn, c.servers.current()
	}
	return c.conn, nil
}

// resetFrom drops the connection if it still goes to addr, which failed.
func (c *client) resetFrom(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && c.connAddr == addr {
		c.conn.Close()
		c.conn = nil
	}
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

// attest trades a join token or a projected token for the agent's first
// SVID, over a connection that presents none.
func (c *client) attest(ctx context.Context, token svid.Credential) (*x509svid.SVID, *agentv1.Bundle, error) {
	conn, err := c.dial(false)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	return svid.Attest(ctx, agentv1.NewAgentClient(conn), token, c.trust())
}

// renew gets a fresh agent SVID with a new key.
func (c *client) renew(ctx context.Context) (*x509svid.SVID, error) {
	api, err := c.api()
	if err != nil {
		return nil, err
	}
	return svid.Renew(ctx, api, c.trust())
}

func (c *client) trust() svid.Trust {
	return svid.Trust{TrustDomain: c.td, Bundles: c.bundles}
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

// ReportStats sends one interval of the node's golden metrics to the
// server.
func (c *client) ReportStats(ctx context.Context, rep *agentv1.StatsReport) error {
	api, err := c.api()
	if err != nil {
		return err
	}
	_, err = api.ReportStats(ctx, rep)
	return err
}

// ExportAudit passes audit records of the node's sidecars to the server's
// audit stream and returns once the server has spooled them, or
// discarded them (true) because it keeps no audit stream.
func (c *client) ExportAudit(ctx context.Context, records [][]byte) (bool, error) {
	api, err := c.api()
	if err != nil {
		return false, err
	}
	resp, err := api.ExportAudit(ctx, &agentv1.ExportAuditRequest{Records: records})
	return resp.GetDiscarded(), err
}
