//go:build linux

package loop

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/proxy/h1"
)

// panicky is an Upstream whose Key or Dial panics.
type panicky struct{ inKey bool }

func (p panicky) Key() string {
	if p.inKey {
		panic("Key")
	}
	return "panicky"
}

func (panicky) Dial(context.Context) (net.Conn, *tls.Config, time.Time, error) { panic("Dial") }

// TestUpstreamPanics: an Upstream whose Key panics fails its caller's
// connection only; one whose Dial panics is unreachable (502); the loop
// serves on.
func TestUpstreamPanics(t *testing.T) {
	k := newKeptServer(t, "k", nil)
	f := start(t, Config{Handler: handlerFunc(func(_ *Caller, h *h1.Head) Verdict {
		switch string(h.Target) {
		case "/key":
			return Verdict{Upstream: panicky{inKey: true}}
		case "/dial":
			return Verdict{Upstream: panicky{}}
		}
		return Verdict{}
	})}, k.addr, false)
	c := f.caller()
	c.c.Write([]byte("GET /key HTTP/1.1\r\nHost: x\r\n\r\n"))
	expectEOF(t, c.br)
	c = f.caller()
	if status, _ := c.get("/dial"); status != http.StatusBadGateway {
		t.Errorf("Dial panicked: %d, want 502", status)
	}
	if status, body := f.caller().get("/ok"); status != 200 || body != "k 1 /ok" {
		t.Errorf("after: %d %q", status, body)
	}
}

// TestNoDial: with no Config.Dial, a request whose Verdict names no
// Upstream gets BadGateway.
func TestNoDial(t *testing.T) {
	f := start(t, Config{Handler: handlerFunc(func(*Caller, *h1.Head) Verdict { return Verdict{} })}, "", false)
	c := f.caller()
	if status, _ := c.get("/x"); status != http.StatusBadGateway {
		t.Errorf("%d, want 502", status)
	}
	expectEOF(t, c.br)
}
