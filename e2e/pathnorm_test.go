package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// denyAdminPolicy is the policy: everything but /admin, written
// the way policies were written before url_path existed.
const denyAdminPolicy = `package sigil.authz

default allow := false

allow if {
	input.source.principal == "spiffe://example.org/ns/default/sa/web"
	not startswith(split(input.request.path, "?")[0], "/admin")
}
`

// pathCase is one request target and what must become of it: refused
// (400), denied (403), or passed with the app receiving exactly uri.
type pathCase struct {
	target string
	codes  []int  // acceptable statuses
	uri    string // for 200: the target the app must receive
}

func denied(target string) pathCase  { return pathCase{target: target, codes: []int{403}} }
func refused(target string) pathCase { return pathCase{target: target, codes: []int{400}} }
func passed(target, uri string) pathCase {
	return pathCase{target: target, codes: []int{200}, uri: uri}
}

// Every spelling of /admin a Go or Java app would serve as /admin is denied
// or refused, through the caller's sidecar and straight at the callee's,
// over HTTP/1.1 and HTTP/2; what passes reaches the app exactly as the
// policy saw it.
func TestPathNormalizationThroughSidecars(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	m.Entry("node1", webSA, "--selector", "unix:uid:"+myUID)
	m.Entry("node2", apiSA, "--selector", "unix:uid:"+myUID)
	webAgent, apiAgent := m.StartAgent("node1"), m.StartAgent("node2")
	dir := filepath.Join(m.Dir, "policy")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(denyAdminPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	_, webApp := harness.StartApp(t, "web")
	_, apiApp := harness.StartApp(t, "api")
	decisions := filepath.Join(m.Dir, "api-decisions.log")
	api := harness.StartProxy(t, apiAgent, "api", apiApp, dir, "--decision-log", decisions)
	web := harness.StartProxy(t, webAgent, "web", webApp, dir, "--upstream", "api="+api.Inbound+"@"+apiSA)

	cases := []pathCase{
		passed("/public/x", "/public/x"),
		passed("/public/x?y=1&z", "/public/x?y=1&z"),
		denied("/admin"),
		denied("/%61dmin"),
		denied("/%61%64%6D%69%6E"),
		denied("/public/../admin"),
		denied("/public/%2e%2e/admin"),
		denied("/public/%2E./admin"),
		denied("/public/x/../../admin"),
		denied("//admin"),
		denied("///admin/"),
		denied("/./admin"),
		denied("/admin%2F"),
		denied("/admin;x"),
		denied("/public/..%2Fadmin"),
		denied("/public/..%2fadmin"),
		denied("/public/..%5Cadmin"),
		denied("/public/..\\admin"),
		denied("/%2Fadmin"),
		denied("http://api/public/../admin"),
		refused("/admin%00"),
		refused("/public%00/../admin"),
		refused("/admin%0a"),
		refused("/admin%"),
		refused("/public/..;/admin"),
		refused("/public/%2e%2e;x/admin"),
		refused("/;x/admin"),
		refused("/admin#x"),
		refused("/public/x?q=%zz"),
		refused("admin"),
		// More parameters than Express parses (Go's net/url drops all past
		// 10,000): the policy would see ones the app does not.
		refused("/public/x?" + strings.Repeat("a&", 1000) + "debug=true"),
		passed("/public/x?"+strings.Repeat("a&", 999)+"b", "/public/x?"+strings.Repeat("a&", 999)+"b"),
		// Not /admin to an app that decodes once and is case-sensitive:
		// passed, normalized.
		passed("/ADMIN", "/ADMIN"),
		passed("/%2561dmin", "/%2561dmin"),
		passed("/public/%252e%252e/admin", "/public/%252e%252e/admin"),
		passed("/pub%6cic/./x/", "/public/x/"),
		passed("/public/caf\xc3\xa9?q=\xc3\xa9", "/public/caf%C3%A9?q=%C3%A9"),
		passed("/public/%c3%a9", "/public/%C3%A9"),
		passed("/public/a%20b", "/public/a%20b"),
	}
	seen := map[string]bool{} // targets the app received
	check := func(t *testing.T, via string, c pathCase, code int, body string) {
		t.Helper()
		if !slices.Contains(c.codes, code) {
			t.Errorf("%s %q: status %d, want %v: %s", via, c.target, code, c.codes, body)
			return
		}
		if code != 200 {
			return
		}
		var r struct {
			URI string `json:"uri"`
		}
		if err := json.Unmarshal([]byte(body), &r); err != nil || r.URI != c.uri {
			t.Errorf("%s %q: the app received %q, want %q (%v)", via, c.target, r.URI, c.uri, err)
		}
		seen[r.URI] = true
	}

	// The caller's sidecar (app-facing), HTTP/1.1.
	for _, c := range cases {
		code, body := rawRequest(t, func() (net.Conn, error) { return net.Dial("tcp", web.Outbound) }, c.target)
		check(t, "outbound", c, code, body)
	}

	// Straight at the callee's sidecar (mesh-facing) with the caller's
	// SVID, as a caller that bypasses its own sidecar would.
	h1, h2 := peerTLS(t, webAgent.Socket, apiSA)
	for _, c := range cases {
		code, body := rawRequest(t, func() (net.Conn, error) { return tls.Dial("tcp", api.Inbound, h1) }, c.target)
		check(t, "inbound h1", c, code, body)
	}
	tr := &http.Transport{TLSClientConfig: h2, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	defer tr.CloseIdleConnections()
	h2Cases(t, "inbound h2", tr, "https://"+api.Inbound, cases, check)
	// The caller's sidecar over h2c, as gRPC apps speak to it.
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	h2Cases(t, "outbound h2c", h2c, "http://"+web.Outbound, cases, check)

	// The policy saw what the app got: every allowed decision's path is a
	// target the app received, and url_path is that path without its query.
	api.Stop()
	data, err := os.ReadFile(decisions)
	if err != nil {
		t.Fatal(err)
	}
	allowed := 0
	for line := range bytes.Lines(data) {
		var d struct {
			Input struct {
				Request struct {
					Path    string              `json:"path"`
					URLPath string              `json:"url_path"`
					Query   map[string][]string `json:"query"`
				} `json:"request"`
			} `json:"input"`
			Result bool `json:"result"`
		}
		if err := json.Unmarshal(line, &d); err != nil {
			t.Fatalf("decision log line %q: %v", line, err)
		}
		rq := d.Input.Request
		if p, _, _ := strings.Cut(rq.Path, "?"); p != rq.URLPath {
			t.Errorf("decision: path %q, url_path %q", rq.Path, rq.URLPath)
		}
		if !d.Result {
			if strings.HasPrefix(rq.URLPath, "/admin") {
				continue
			}
			t.Errorf("decision denied %q", rq.Path)
			continue
		}
		allowed++
		if !seen[rq.Path] {
			t.Errorf("policy allowed %q, which the app never received (it received %v)", rq.Path, seen)
		}
		if rq.Path == "/public/x?y=1&z" && (len(rq.Query["y"]) != 1 || rq.Query["y"][0] != "1" || len(rq.Query["z"]) != 1) {
			t.Errorf("query of %q parsed as %v", rq.Path, rq.Query)
		}
	}
	if allowed == 0 {
		t.Fatal("no allowed decision logged")
	}
}

// rawRequest sends target as it is, on a new connection, and returns the
// status and body.
func rawRequest(t *testing.T, dial func() (net.Conn, error), target string) (int, string) {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// peerTLS is the mTLS client configuration of the workload whose agent
// listens on socket, for a sidecar that must be want: HTTP/1.1 and HTTP/2.
func peerTLS(t *testing.T, socket, want string) (*tls.Config, *tls.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		t.Fatal(err)
	}
	h1 := tlsconfig.MTLSClientConfig(x.DefaultSVID(), x.Bundles, tlsconfig.AuthorizeID(spiffeid.RequireFromString(want)))
	h1.NextProtos = []string{"http/1.1"}
	h2 := h1.Clone()
	h2.NextProtos = []string{"h2"}
	return h1, h2
}

// h2Cases sends each case's target as an HTTP/2 :path through tr to base.
func h2Cases(t *testing.T, via string, tr *http.Transport, base string, cases []pathCase, check func(*testing.T, string, pathCase, int, string)) {
	t.Helper()
	for _, c := range cases {
		// net/http's HTTP/2 server resets a :path with a malformed escape
		// itself, and its client then retries until the deadline.
		if c.target == "admin" || c.target == "/admin%" || strings.HasPrefix(c.target, "//") || strings.HasPrefix(c.target, "http:") || strings.Contains(c.target, "#") || strings.ContainsFunc(c.target, func(r rune) bool { return r > 0x7f }) {
			continue // not a :path an HTTP/2 client sends
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/", nil)
		req.URL.Opaque = c.target // sent as :path, unescaped
		req.Host = "api"
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Errorf("%s %q: %v", via, c.target, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		check(t, via, c, resp.StatusCode, string(body))
	}
}
