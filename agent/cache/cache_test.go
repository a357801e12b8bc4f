package cache

import (
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestAgentRecoversAfterLongOutageCacheSaysWhy(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(nil, nil, slog.New(slog.DiscardHandler), func() time.Time { return now })
	if err := c.SetEntries([]*agentv1.Entry{{Id: "e1", SpiffeId: "spiffe://example.org/ns/default/sa/web", Selectors: []*agentv1.Selector{{Type: "unix", Value: "uid:1"}}}}); err != nil {
		t.Fatal(err)
	}
	sels := selector.NewSet(selector.Selector{Type: "unix", Value: "uid:1"})
	other := selector.NewSet(selector.Selector{Type: "unix", Value: "uid:2"})

	// Waiting for its first SVID, with signing possible: not an answer yet.
	if err := c.Unavailable(sels); err != nil {
		t.Fatalf("first SVID pending: %v", err)
	}
	changed := c.Changed()
	c.SetBlocked(errors.New("agent svid expired"))
	select {
	case <-changed:
	default:
		t.Fatal("SetBlocked did not wake watchers")
	}
	if err := c.Unavailable(sels); err == nil || !strings.Contains(err.Error(), "agent svid expired") {
		t.Fatalf("blocked, no SVID: %v", err)
	}
	if err := c.Unavailable(other); err != nil {
		t.Fatalf("another workload's entry answered for: %v", err)
	}
	// An SVID that expired is an answer at once, blocked or not.
	c.SetBlocked(nil)
	c.mu.Lock()
	c.ids["e1"].SVID = &x509svid.SVID{Certificates: []*x509.Certificate{{NotAfter: now.Add(-time.Second)}}}
	c.mu.Unlock()
	if ids, pending := c.Match(sels); len(ids) != 0 || !pending {
		t.Fatalf("expired SVID matched: %v %v", ids, pending)
	}
	if err := c.Unavailable(sels); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("expired SVID: %v", err)
	}
}
