package server

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/k8s/evictions"
	"github.com/sigil-mesh/sigil/server/registry"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"
)

// TestEvictionSigningReadsTheAPIServer: a leader whose ConfigMap watch
// lags behind an eviction made on another replica does not sign for the
// evicted agent: a renewal with an SVID from before the eviction is
// refused, an attestation is held past the eviction, and when the
// ConfigMap cannot be read nothing is signed (fail closed).
func TestEvictionSigningReadsTheAPIServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leader, cs := evictionServer(t, time.Now().Add(-time.Minute), nil)
	var lag atomic.Bool
	lag.Store(true)
	cs.PrependWatchReactor("configmaps", func(k8stesting.Action) (bool, watch.Interface, error) {
		if lag.Load() {
			return true, watch.NewFake(), nil // a watch that never delivers
		}
		return false, nil, nil
	})
	if _, err := leader.ha.evictions.Watch(ctx, func([]evictions.Eviction) {}, func(error) {}); err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString(evictedAgent)
	renewing, err := leader.ca.SignX509SVID(mustPub(t), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := evictions.New(cs, "sigil-system", evictions.DefaultName).Record(ctx, evictions.Eviction{Agent: evictedAgent, At: now, Replica: "sigil-server-a", Until: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := leader.refuseEvicted(id, renewing[0]); err != nil {
		t.Fatalf("the lagging watch already saw the eviction (%v): the test shows nothing", err)
	}
	agent, err := leader.store.GetAgent(ctx, evictedAgent)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leader.signAgent(ctx, agent, renewing[0], mustPub(t), audit.Event{}, audit.AgentRenewed, nil); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "evicted") {
		t.Errorf("renewal with an SVID from before the eviction: %v; want PermissionDenied", err)
	}
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	if _, err := leader.signAgent(short, agent, nil, mustPub(t), audit.Event{}, audit.AgentAttested, nil); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "may attest again from") {
		t.Errorf("attestation right after the eviction: %v; want it held past the eviction", err)
	}
	cs.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New(`configmaps "sigil-agent-evictions" is forbidden`)
	})
	if _, err := leader.signAgent(ctx, agent, renewing[0], mustPub(t), audit.Event{}, audit.AgentRenewed, nil); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("renewal with the ConfigMap unreadable: %v; want Unavailable saying why", err)
	}
	if n := len(leader.audited(audit.AgentRenewed)) + len(leader.audited(audit.AgentAttested)); n != 0 {
		t.Errorf("%d agent SVIDs signed; want none", n)
	}
}

func banRequest(method, id string) *http.Request {
	r := httptest.NewRequest(method, "/v1/agents/x/ban", nil)
	r.SetPathValue("id", id)
	return r
}

// TestAgentBanKeepsTheAgentOut: agent ban evicts the agent and no SVID is
// signed for it again, whatever it presents, until agent unban; both are
// audited; a later eviction does not lift the ban; on a plain host ban is
// refused with a reason.
func TestAgentBanKeepsTheAgentOut(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, _ := evictionServer(t, time.Now().Add(-time.Minute), nil)
	if _, err := p.ha.evictions.Watch(ctx, func([]evictions.Eviction) {}, func(error) {}); err != nil {
		t.Fatal(err)
	}
	agent, err := p.store.GetAgent(ctx, evictedAgent)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.banAgent(banRequest(http.MethodPost, evictedAgent)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.store.GetAgent(ctx, evictedAgent); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("record after the ban: %v; want it gone", err)
	}
	if len(p.audited(auditAgentBanned)) != 1 || len(p.audited(audit.AgentEvicted)) != 1 {
		t.Fatalf("audit: banned %v, evicted %v; want one of each", p.audited(auditAgentBanned), p.audited(audit.AgentEvicted))
	}
	if _, err := p.evictAgent(evictRequest(evictedAgent)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.signAgent(ctx, agent, nil, mustPub(t), audit.Event{}, audit.AgentAttested, nil); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "banned") {
		t.Fatalf("attestation of a banned agent: %v; want PermissionDenied naming the ban", err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if e, ok := p.ha.evictions.Lookup(evictedAgent); ok && e.Banned {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watch never saw the ban")
		}
	}
	future := &x509.Certificate{NotBefore: time.Now().Add(time.Hour)}
	if err := p.refuseEvicted(spiffeid.RequireFromString(evictedAgent), future); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a banned agent's SVID issued after the ban: %v; want PermissionDenied", err)
	}

	if _, err := p.unbanAgent(banRequest(http.MethodDelete, evictedAgent)); err != nil {
		t.Fatal(err)
	}
	var apiErr *adminv1.APIError
	if _, err := p.unbanAgent(banRequest(http.MethodDelete, evictedAgent)); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("unban of an agent not banned: %v; want 404", err)
	}
	if e, ok, err := p.ha.evictions.Fetch(ctx, evictedAgent, time.Now()); err != nil || !ok || e.Banned {
		t.Fatalf("after unban: %+v, %v, %v; want a plain eviction", e, ok, err)
	}
	if len(p.audited(auditAgentUnbanned)) != 2 {
		t.Fatalf("audit: unbanned %v; want both attempts", p.audited(auditAgentUnbanned))
	}

	plain := newPSATServer(t, false)
	if _, err := plain.banAgent(banRequest(http.MethodPost, evictedAgent)); !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || !strings.Contains(apiErr.Message, "--kubernetes") {
		t.Fatalf("ban on a plain host: %v; want 400 naming --kubernetes", err)
	}
}

// TestEvictionClockSkew: an evicting replica whose clock is behind the
// leader's dates the eviction no earlier than the signing of the agent's
// newest SVID it knows, so that SVID is still refused; a replica that sees
// an eviction dated far from its own clock says so.
func TestEvictionClockSkew(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, _ := evictionServer(t, time.Now().Add(-time.Minute), nil)
	var logged strings.Builder
	p.log = slog.New(slog.NewJSONHandler(&syncWriter{w: &logged}, nil))
	id := spiffeid.RequireFromString(evictedAgent)
	chain, err := p.ca.SignX509SVID(mustPub(t), id, p.cfg.AgentX509TTL) // the leader renews, by the true clock
	if err != nil {
		t.Fatal(err)
	}
	a, err := p.store.GetAgent(ctx, evictedAgent)
	if err != nil {
		t.Fatal(err)
	}
	a.ExpiresAt = chain[0].NotAfter
	if err := p.store.SaveAgent(ctx, a, time.Now()); err != nil {
		t.Fatal(err)
	}
	p.now = func() time.Time { return time.Now().Add(-20 * time.Second) } // this replica's clock, behind
	if _, err := p.evictAgent(evictRequest(evictedAgent)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ha.evictions.Watch(ctx, func([]evictions.Eviction) {}, func(error) {}); err != nil {
		t.Fatal(err)
	}
	if err := p.refuseEvicted(id, chain[0]); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the SVID renewed just before an eviction by a replica 20 s behind: %v; want PermissionDenied", err)
	}
	if !strings.Contains(logged.String(), "clock is behind the leader's") {
		t.Errorf("no warning that this replica's clock is behind: %s", logged.String())
	}

	p.now = time.Now
	p.evictedElsewhere(ctx, []evictions.Eviction{{Agent: evictedAgent, At: time.Now().Add(-time.Minute), Replica: "sigil-server-a"}})
	if !strings.Contains(logged.String(), `"msg":"agent eviction seen far from its time`) || !strings.Contains(logged.String(), `"offset":"1m0`) {
		t.Errorf("no warning for an eviction seen a minute late: %s", logged.String())
	}
}

// syncWriter serializes writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// TestAuditReconcilesAgentBans: an agent.banned or agent.unbanned intent
// left unsettled by a crash is settled at start from the evictions
// ConfigMap: committed when it holds the ban (or its absence), aborted
// otherwise.
func TestAuditReconcilesAgentBans(t *testing.T) {
	ctx := context.Background()
	p, _ := evictionServer(t, time.Now().Add(-time.Minute), nil)
	ban := evictions.Eviction{Agent: evictedAgent, At: time.Now(), Replica: "sigil-server-b", Until: time.Now().Add(time.Hour), Banned: true}
	if err := p.ha.evictions.Record(ctx, ban); err != nil {
		t.Fatal(err)
	}
	other := "spiffe://example.org/sigil/agent/k8s_psat/prod/node-b"
	committed, aborted := len(p.audited(audit.ActionCommitted)), len(p.audited(audit.ActionAborted))
	for _, e := range []audit.Event{
		{Type: auditAgentBanned, Actor: "admin", Subject: evictedAgent},   // landed
		{Type: auditAgentUnbanned, Actor: "admin", Subject: evictedAgent}, // did not
		{Type: auditAgentBanned, Actor: "admin", Subject: other},          // did not
		{Type: auditAgentUnbanned, Actor: "admin", Subject: other},        // holds: not banned
	} {
		if _, err := p.audit.Begin(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.reconcileAudit(ctx); err != nil {
		t.Fatal(err)
	}
	if c, a := len(p.audited(audit.ActionCommitted))-committed, len(p.audited(audit.ActionAborted))-aborted; c != 2 || a != 2 {
		t.Fatalf("reconciled: %d committed, %d aborted; want 2 and 2", c, a)
	}
}
