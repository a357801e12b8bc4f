package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/agent/svid"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/ca"
	"github.com/sigil-mesh/sigil/k8s/psat"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// psatServer is a Server with a real store, audit trail and CA whose
// projected-token attestor asks a fake API server: tokens "agent-token-*"
// are the bound tokens of the agent pod on node-a, "other-sa" one of
// default:default, and "down" makes the TokenReview call fail.
type psatServer struct {
	*Server
	mu     sync.Mutex
	events []audit.Event
}

func (p *psatServer) audited(typ string) []audit.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []audit.Event
	for _, e := range p.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func newPSATServer(t *testing.T, kubernetes bool) *psatServer {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	store, err := registry.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	p := &psatServer{}
	trail, err := audit.Open(filepath.Join(dir, "audit.log"), time.Now, audit.WithTee(func(e audit.Event) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.events = append(p.events, e)
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trail.Close() })
	td := spiffeid.RequireTrustDomainFromString("example.org")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	authority, err := ca.New(ctx, ca.Config{TrustDomain: td, KeyDir: ca.KeyDir(dir), State: store, Audit: trail, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &checked{Config: Config{AgentX509TTL: time.Hour, Kubernetes: KubeConfig{Enabled: kubernetes, Cluster: "prod"}}, td: td}
	p.Server = &Server{cfg: cfg, log: log, store: store, audit: trail, ca: authority, changes: newBroadcaster(), now: time.Now}
	if !kubernetes {
		return p
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "sigil-system", Name: "sigil-agent-1", UID: "uid-1"},
		Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "sigil-agent"},
	}
	cs := fake.NewClientset(pod)
	cs.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		r := action.(k8stesting.CreateAction).GetObject().(*authv1.TokenReview).DeepCopy()
		user := "system:serviceaccount:sigil-system:sigil-agent"
		switch tok := r.Spec.Token; {
		case tok == "down":
			return true, nil, errors.New("dial tcp 10.0.0.1:443: connection refused")
		case tok == "other-sa":
			user = "system:serviceaccount:default:default"
		case !strings.HasPrefix(tok, "agent-token-"):
			r.Status.Error = "invalid bearer token"
			return true, r, nil
		}
		r.Status = authv1.TokenReviewStatus{Authenticated: true, Audiences: r.Spec.Audiences, User: authv1.UserInfo{Username: user, Extra: map[string]authv1.ExtraValue{
			"authentication.kubernetes.io/pod-name": {"sigil-agent-1"},
			"authentication.kubernetes.io/pod-uid":  {"uid-1"},
		}}}
		return true, r, nil
	})
	p.psat.Store(psat.New(psat.NewClient(cs), psat.Config{}))
	return p
}

// testCSR is a CSR for a fresh key, made as the agent makes it.
func testCSR(t *testing.T) []byte {
	t.Helper()
	_, csr, err := svid.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// TestAttestPSAT: the Attest call's projected-token branch, end to end
// inside the server: the agent ID's form, what the registry stores, what
// the audit trail says (never the token), and the gRPC codes of each
// refusal.
func TestAttestPSAT(t *testing.T) {
	ctx := context.Background()
	s := newPSATServer(t, true)

	// Tokens are not single use: the same token again, then a fresh one
	// (kubelet's rotation), both attest the same agent.
	want := "spiffe://example.org/sigil/agent/k8s_psat/prod/node-a"
	for _, tok := range []string{"agent-token-1", "agent-token-1", "agent-token-2"} {
		resp, err := s.Attest(ctx, &agentv1.AttestRequest{K8SPsatToken: tok, Csr: testCSR(t)})
		if err != nil {
			t.Fatalf("Attest(%s): %v", tok, err)
		}
		if got := resp.GetSvid().GetSpiffeId(); got != want {
			t.Fatalf("Attest(%s) issued %s, want %s", tok, got, want)
		}
	}
	agent, err := s.store.GetAgent(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if agent.Attestor != naming.AttestorK8sPSAT || agent.Node != "node-a" {
		t.Fatalf("registry holds %+v, want attestor k8s_psat on node-a", agent)
	}
	attested := s.audited(audit.AgentAttested)
	if len(attested) != 3 {
		t.Fatalf("%d agent.attested records, want 3", len(attested))
	}
	d := attested[0].Details
	if d["attestor"] != "k8s_psat" || d["node"] != "node-a" || d["pod"] != "sigil-system/sigil-agent-1" || d["sa"] != "sigil-system:sigil-agent" || len(d["token_sha256"]) != 16 {
		t.Fatalf("agent.attested details = %v", d)
	}

	// Renewal keeps the attestor.
	if _, err := s.signAgent(ctx, agent, nil, mustPub(t), audit.Event{}, audit.AgentRenewed, nil); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.store.GetAgent(ctx, want); again.Attestor != naming.AttestorK8sPSAT {
		t.Fatalf("after renewal the registry holds attestor %q", again.Attestor)
	}

	tests := []struct {
		name     string
		req      *agentv1.AttestRequest
		code     codes.Code
		text     string
		audited  bool // an agent.refused record
		withNode bool
	}{
		{name: "both tokens", req: &agentv1.AttestRequest{JoinToken: "j", K8SPsatToken: "agent-token-1", Csr: testCSR(t)}, code: codes.InvalidArgument, text: "not both"},
		{name: "no token", req: &agentv1.AttestRequest{Csr: testCSR(t)}, code: codes.InvalidArgument, text: "join_token or k8s_psat_token is required"},
		{name: "bad csr", req: &agentv1.AttestRequest{K8SPsatToken: "agent-token-1", Csr: []byte("x")}, code: codes.InvalidArgument},
		{name: "forged token", req: &agentv1.AttestRequest{K8SPsatToken: "forged", Csr: testCSR(t)}, code: codes.PermissionDenied, text: "invalid bearer token", audited: true},
		{name: "service account not allowed", req: &agentv1.AttestRequest{K8SPsatToken: "other-sa", Csr: testCSR(t)}, code: codes.PermissionDenied, text: "default:default is not allowed", audited: true},
		{name: "api server unreachable", req: &agentv1.AttestRequest{K8SPsatToken: "down", Csr: testCSR(t)}, code: codes.Unavailable, text: "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.audited(audit.AgentRefused))
			_, err := s.Attest(ctx, tt.req)
			if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.text) {
				t.Fatalf("Attest = %v, want %s saying %q", err, tt.code, tt.text)
			}
			refused := s.audited(audit.AgentRefused)
			if got := len(refused) - before; got != map[bool]int{true: 1}[tt.audited] {
				t.Fatalf("%d agent.refused records, want audited=%v", got, tt.audited)
			}
			if tt.audited {
				d := refused[len(refused)-1].Details
				if d["attestor"] != "k8s_psat" || !strings.Contains(d["reason"], tt.text) {
					t.Fatalf("agent.refused details = %v", d)
				}
			}
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.events {
		for k, v := range e.Details {
			if strings.Contains(v, "agent-token-") || strings.Contains(v, "forged") {
				t.Fatalf("audit record %s has the token in %s: %q", e.Type, k, v)
			}
		}
	}
}

// TestAttestPSATNeedsKubernetes: a plain-host server says why it cannot
// take a projected token, and attests nothing.
func TestAttestPSATNeedsKubernetes(t *testing.T) {
	s := newPSATServer(t, false)
	_, err := s.Attest(context.Background(), &agentv1.AttestRequest{K8SPsatToken: "agent-token-1", Csr: testCSR(t)})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--kubernetes") {
		t.Fatalf("Attest = %v, want FailedPrecondition naming --kubernetes", err)
	}
}

func mustPub(t *testing.T) any {
	t.Helper()
	pub, err := ca.ParseCSR(testCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
