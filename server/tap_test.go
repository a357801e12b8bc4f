package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/server/registry"
)

// GET /v1/tap goes to the agents whose nodes run the service's sidecars
// only, takes events only from them, outlives the admin server's read
// timeout, ends at its number of events and then tells the agents to stop.
func TestTapStreamScopesAgentsAndEnds(t *testing.T) {
	s, store := storeServer(t)
	trailPath := filepath.Join(t.TempDir(), "audit.log")
	trail, err := audit.Open(trailPath, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer trail.Close()
	s.audit = trail
	ctx := t.Context()
	for agent, svc := range map[string]string{"A": "api", "B": "web"} {
		if _, _, err := store.ReplaceProxies(ctx, agent, []registry.ProxyRecord{{AgentID: agent, ProxyID: agent + "1", SPIFFEID: "spiffe://example.org/ns/default/sa/" + svc, Service: svc, Namespace: "default", Address: "127.0.0.1:1"}}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	a, b := s.taps.connect("A", s.now), s.taps.connect("B", s.now)
	srv := httptest.NewUnstartedServer(s.adminHandler())
	srv.Config.ReadTimeout = 200 * time.Millisecond
	srv.Start()
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/v1/tap?service=api&max=2")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	next := func() adminv1.TapLine {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("stream ended: %v", lines.Err())
		}
		var l adminv1.TapLine
		if err := json.Unmarshal(lines.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	if l := next(); l.Status == nil || l.Status.Sidecars != 0 {
		t.Fatalf("first line %+v, want a status", l)
	}
	c := <-a.send
	if c.GetMatch().GetService() != "api" || c.GetStop() || len(b.send) != 0 {
		t.Fatalf("control %v; web's agent got %d", c, len(b.send))
	}
	id := c.GetTapId()
	s.taps.fromAgent("A", &agentv1.TapUp{TapId: id, Msg: &agentv1.TapUp_Started{Started: &agentv1.TapStarted{Sidecars: 50}}})
	if l := next(); l.Status == nil || l.Status.Sidecars != 1 {
		t.Fatalf("line %+v, want one sidecar started (an agent speaks for one per message)", l)
	}
	// Past the read timeout: the stream must still be open. (Time passing
	// is what is tested here; nothing to wait on instead.)
	time.Sleep(3 * srv.Config.ReadTimeout)
	s.taps.fromAgent("B", &agentv1.TapUp{TapId: id, Msg: &agentv1.TapUp_Event{Event: &agentv1.TapEvent{Path: "/from-b"}}})
	for _, path := range []string{"/one?token=secret", "/two"} {
		s.taps.fromAgent("A", &agentv1.TapUp{TapId: id, Msg: &agentv1.TapUp_Event{Event: &agentv1.TapEvent{Path: path, Method: "GET", Status: 200, LatencyMicros: 1500}}})
	}
	for _, want := range []string{"/one", "/two"} {
		if l := next(); l.Event == nil || l.Event.Path != want || l.Event.LatencyMS != 1.5 {
			t.Fatalf("line %+v, want the event of %s", l, want)
		}
	}
	if l := next(); l.Status == nil || l.Status.End != "max events reached" || l.Status.Events != 2 {
		t.Fatalf("last line %+v", l)
	}
	if trail, err := os.ReadFile(trailPath); err != nil || !strings.Contains(string(trail), `"type":"tap.started"`) || !strings.Contains(string(trail), id) {
		t.Fatalf("no tap.started record of tap %s in the audit trail (%v)", id, err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case c := <-a.send:
			if !c.GetStop() {
				continue // a renewal sent before the end
			}
			if c.GetTapId() != id {
				t.Fatalf("stop for %s, want %s", c.GetTapId(), id)
			}
			return
		case <-deadline:
			t.Fatal("api's agent was not told to stop the tap")
		}
	}
}

func TestTapStreamRefusesBadQueries(t *testing.T) {
	s, _ := storeServer(t)
	h := s.adminHandler()
	for _, q := range []string{"", "service=API", "service=api&rate=5000", "service=api&max=0", "service=api&max=x", "service=api&path=nope", "service=api&namespace=a.b",
		// A misspelt or repeated parameter would tap more than was asked.
		"service=api&pth=/admin", "service=api&method=GET&method=POST", "service=api&service=web"} {
		rec := httptest.NewRecorder()
		// A query taken as a tap would stream until its client goes: the
		// context ends it, so the test fails rather than hangs.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/tap?"+q, nil).WithContext(ctx))
		cancel()
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "tap") {
			t.Errorf("%q: %d %s, want 400 naming the tap's fault", q, rec.Code, rec.Body.String())
		}
	}
}
