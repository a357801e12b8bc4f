package proxy

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	proxyv1 "github.com/sigil-mesh/sigil/api/proxy/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/tap"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// A sidecar's tap: nothing is sampled before a tap starts; an event
// carries no header or query; a tap ends with the stream that brought it
// (fail safe) and lapses unless renewed.
func TestTapSidecarSamplesAndFailsSafe(t *testing.T) {
	names, err := naming.NewResolver("default", naming.DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	p := &Proxy{log: slog.New(slog.DiscardHandler), names: names, id: &identity{id: spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/api")}}
	p.taps = newTapper(func() time.Time { return now }, p.log)
	req := httptest.NewRequest("GET", "http://api/orders/1?token=secret-query", nil)
	req.Header.Set("Authorization", "Bearer secret-xyz")
	rec := &requestRecord{reporter: reporterDestination, source: "spiffe://example.org/ns/default/sa/web", dest: "spiffe://example.org/ns/default/sa/api",
		service: naming.Service{Name: "api", Namespace: "default"}, subset: "v1", route: "r1", protocol: "http", code: 200}
	record := func() { p.taps.record(p, rec, req, now, 3*time.Millisecond) }

	record()
	if len(p.taps.out) != 0 {
		t.Fatal("sampled with no tap running")
	}
	p.taps.control(&agentv1.TapControl{TapId: "t1", Match: &agentv1.TapMatch{Namespace: "default", Service: "api", PathPrefix: "/orders"}, Rate: 10, MaxEvents: 10, TtlMillis: tap.TTL.Milliseconds()})
	if up := <-p.taps.out; up.GetStarted().GetSidecars() != 1 {
		t.Fatalf("first message %v, want the tap's start", up)
	}
	record()
	ev := (<-p.taps.out).GetEvent()
	if ev.GetPath() != "/orders/1" || ev.GetMethod() != "GET" || ev.GetStatus() != 200 || ev.GetLatencyMicros() != 3000 ||
		ev.GetSourcePrincipal() != "spiffe://example.org/ns/default/sa/web" || ev.GetDestinationPrincipal() != "spiffe://example.org/ns/default/sa/api" ||
		ev.GetDirection() != tap.Inbound || ev.GetDestinationSubset() != "v1" || ev.GetRoute() != "r1" || ev.GetDestinationService() != "api" {
		t.Fatalf("event %v", ev)
	}

	// The stream ends: the pump clears every tap.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		p.taps.pump(ctx, &sync.Mutex{}, func(*proxyv1.DiscoveryRequest) error { return nil })
		close(done)
	}()
	cancel()
	<-done
	if p.taps.set.Active() {
		t.Fatal("a tap outlived the stream that brought it")
	}

	// Not renewed: it lapses on its own.
	p.taps.control(&agentv1.TapControl{TapId: "t2", Match: &agentv1.TapMatch{Service: "api"}, Rate: 10, MaxEvents: 10, TtlMillis: tap.TTL.Milliseconds()})
	<-p.taps.out
	now = now.Add(tap.TTL)
	record()
	if len(p.taps.out) != 0 || p.taps.set.Active() {
		t.Fatal("a tap not renewed within its TTL still samples")
	}
}
