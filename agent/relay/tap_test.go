package relay

import (
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/tap"
)

// The agent passes a tap only to the sidecars of the tapped service, sets
// each event's reporter to the identity it attested (not the one a
// sidecar claims), drops what belongs to no tap it holds, and stops the
// sidecars' taps when the server stops renewing.
func TestTapRelayScopesAndFailsSafe(t *testing.T) {
	now := time.Unix(1000, 0)
	r := &Relay{taps: newTaps(func() time.Time { return now })}
	api := &agentv1.Proxy{Id: "a", Service: "api", Namespace: "default", SpiffeId: "spiffe://example.org/ns/default/sa/api"}
	web := &agentv1.Proxy{Id: "w", Service: "web", Namespace: "default", SpiffeId: "spiffe://example.org/ns/default/sa/web"}
	apiCh, webCh := r.taps.join(api), r.taps.join(web)
	start := &agentv1.TapControl{TapId: "t1", Match: &agentv1.TapMatch{Namespace: "default", Service: "api"}, Rate: 100, MaxEvents: 100, TtlMillis: tap.TTL.Milliseconds()}
	if err := r.TapControl(start); err != nil {
		t.Fatal(err)
	}
	if c := <-apiCh; c.GetTapId() != "t1" || len(webCh) != 0 {
		t.Fatalf("control went to web's sidecar, or not to api's")
	}
	if late := r.taps.join(&agentv1.Proxy{Id: "a2", Service: "api", Namespace: "default"}); len(late) != 1 {
		t.Fatal("a sidecar of api that came later did not get the running tap")
	}
	if err := r.TapControl(&agentv1.TapControl{TapId: "bad", Match: &agentv1.TapMatch{Service: "api"}}); err == nil {
		t.Fatal("a control out of bounds was taken")
	}

	r.taps.fromSidecar(api, &agentv1.TapUp{TapId: "t1", Msg: &agentv1.TapUp_Event{Event: &agentv1.TapEvent{Reporter: "spiffe://example.org/ns/default/sa/admin", Direction: tap.Inbound, Path: "/x?token=secret"}}})
	up := <-r.TapUp()
	if ev := up.GetEvent(); ev.GetReporter() != api.SpiffeId || ev.GetDestinationPrincipal() != api.SpiffeId || ev.GetPath() != "/x" {
		t.Fatalf("event passed on as %v", ev)
	}
	r.taps.fromSidecar(web, &agentv1.TapUp{TapId: "other", Msg: &agentv1.TapUp_Event{Event: &agentv1.TapEvent{}}})
	r.taps.fromSidecar(web, &agentv1.TapUp{TapId: "other", Msg: &agentv1.TapUp_Started{Started: &agentv1.TapStarted{Sidecars: 1000}}})
	if len(r.TapUp()) != 0 {
		t.Fatal("messages of a tap the node does not hold were passed on")
	}

	now = now.Add(tap.TTL)
	r.ExpireTaps()
	for name, ch := range map[string]chan *agentv1.TapControl{"api": apiCh, "web": webCh} {
		if c := <-ch; !c.GetStop() || c.GetTapId() != "t1" {
			t.Fatalf("%s's sidecar got %v, want the lapsed tap's stop", name, c)
		}
	}
}
