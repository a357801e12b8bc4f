package svid

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
)

// Attester is the server call that trades a join token or a projected
// service-account token for the agent's first SVID (over a connection
// that presents no SVID).
type Attester interface {
	Attest(ctx context.Context, in *agentv1.AttestRequest, opts ...grpc.CallOption) (*agentv1.AttestResponse, error)
}

// Renewer is the server call that renews the agent's SVID (over a
// connection that presents the current one).
type Renewer interface {
	RenewAgent(ctx context.Context, in *agentv1.RenewAgentRequest, opts ...grpc.CallOption) (*agentv1.RenewAgentResponse, error)
}

// Trust is what the agent checks its own SVIDs against: an agent ID of
// TrustDomain, chained to Bundles at Now (time.Now when nil).
type Trust struct {
	TrustDomain spiffeid.TrustDomain
	Bundles     x509bundle.Source
	Now         func() time.Time
}

// verify checks an agent SVID the server signed for key.
func (t Trust) verify(p *agentv1.X509SVID, key *ecdsa.PrivateKey) (*x509svid.SVID, error) {
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	return VerifyChain(p.GetCertChain(), key, t.Bundles, now(), AgentOf(t.TrustDomain))
}

// Attest trades cred for the agent's first SVID (a key made here) and the
// server's bundle. The gRPC status of a refusal is kept (errors.Is,
// status.Code): the caller tells a refused token from a server away.
func Attest(ctx context.Context, api Attester, cred Credential, trust Trust) (*x509svid.SVID, *agentv1.Bundle, error) {
	key, csr, err := NewKeyAndCSR()
	if err != nil {
		return nil, nil, err
	}
	resp, err := api.Attest(ctx, cred.request(csr))
	if err != nil {
		return nil, nil, fmt.Errorf("svid: attestation: %w", err)
	}
	s, err := trust.verify(resp.GetSvid(), key)
	return s, resp.GetBundle(), err
}

// Renew gets a fresh agent SVID with a new key. The gRPC status of a
// refusal is kept (PermissionDenied: the server no longer knows this
// agent).
func Renew(ctx context.Context, api Renewer, trust Trust) (*x509svid.SVID, error) {
	key, csr, err := NewKeyAndCSR()
	if err != nil {
		return nil, err
	}
	resp, err := api.RenewAgent(ctx, &agentv1.RenewAgentRequest{Csr: csr})
	if err != nil {
		return nil, fmt.Errorf("svid: renewing agent svid: %w", err)
	}
	return trust.verify(resp.GetSvid(), key)
}
