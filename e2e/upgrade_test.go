package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// h2cApp is an app that takes any "Upgrade: h2c" (as lenient h2c servers
// do), answers 101 and reads what follows; frames records whether HTTP/2
// frames reached it through the tunnel.
type h2cApp struct {
	*recordingApp
	frames atomic.Bool
}

func (a *h2cApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "h2c") {
		a.recordingApp.ServeHTTP(w, r)
		return
	}
	a.mu.Lock()
	a.seen = append(a.seen, r)
	a.mu.Unlock()
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
	brw.Flush()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(brw, b); err == nil && string(b) == http2.ClientPreface {
		a.frames.Store(true)
	}
}

// An Upgrade other than WebSocket never turns a connection into a tunnel.
// With "Upgrade: h2c" an app that speaks h2c answers 101 and then reads
// HTTP/2 frames: every request on them would reach the app with no policy
// decision (the h2c smuggling of
// BishopFox, 2020; Envoy strips h2c upgrades and tunnels only configured
// types). Here the GET that carries the upgrade is allowed, and the POST
// smuggled after it would be denied.
func TestUpgradeOnlyWebSocketTunnels(t *testing.T) {
	t.Parallel()
	ids := startIdentities(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &h2cApp{recordingApp: &recordingApp{addr: ln.Addr().String()}}
	app.srv = &http.Server{Handler: app, ReadHeaderTimeout: 10 * time.Second}
	go app.srv.Serve(ln)
	t.Cleanup(func() { app.srv.Close() })
	api := harness.StartProxy(t, ids.api, "api", app.addr, ids.policyDir)
	_, webApp := harness.StartApp(t, "web")
	web := harness.StartProxy(t, ids.web, "web", webApp, ids.policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA)

	c, err := net.DialTimeout("tcp", web.Outbound, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "GET /upgrade HTTP/1.1\r\nHost: api\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The tunnel is open: smuggle a POST the policy denies.
		io.WriteString(c, http2.ClientPreface)
		fr := http2.NewFramer(c, br)
		fr.WriteSettings()
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "api"}, {":path", "/smuggled"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
		for range 20 { // until the smuggled stream's answer, or the deadline
			f, err := fr.ReadFrame()
			if err != nil {
				break
			}
			if f.Header().StreamID == 3 && f.Header().Flags.Has(http2.FlagHeadersEndStream|http2.FlagDataEndStream) {
				break
			}
		}
		t.Errorf("Upgrade: h2c was answered %s: the connection became a tunnel", resp.Status)
	} else {
		resp.Body.Close()
	}
	if app.frames.Load() {
		t.Errorf("HTTP/2 frames (a POST the policy denies) reached the app through an h2c tunnel")
	}
	for _, r := range app.requests() {
		if r.Header.Get("Upgrade") != "" || r.Header.Get("Http2-Settings") != "" {
			t.Errorf("%s: the app got Upgrade %q, HTTP2-Settings %q", r.URL.Path, r.Header.Get("Upgrade"), r.Header.Get("Http2-Settings"))
		}
	}
}
