package e2e

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"testing"

	"github.com/sigil-mesh/sigil/e2e/harness"
)

// slowPolicy lets web call api; a decision on /slow takes the policy
// about a second to evaluate (250,000 steps of an every; cached after).
const slowPolicy = `package sigil.authz

default allow := false

allow if {
	input.source.principal == "spiffe://example.org/ns/default/sa/web"
	input.request.url_path != "/slow"
}

allow if {
	input.source.principal == "spiffe://example.org/ns/default/sa/web"
	input.request.url_path == "/slow"
	every i in numbers.range(1, 500) {
		every j in numbers.range(1, 500) {
			i + j > 0
		}
	}
}
`

// A slow policy decision holds up only its own request: while the
// callee's sidecar evaluates the policy for one caller's connection,
// another's requests, whose decisions are cached, are answered, on the
// goroutine path and on the event loop alike (which evaluates off its
// goroutine: loop.Verdict.Decide); then the slow request is answered
// too, allowed.
func TestSlowPolicyDecisionHoldsUpOnlyItsRequest(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		flags []string
	}{{"goroutines", nil}, {"event-loop", []string{"--inbound-event-loop"}}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ids := startIdentities(t)
			dir := policyDir(t, ids.m, "slow-policy", slowPolicy)
			_, apiApp := harness.StartApp(t, "api")
			api := harness.StartProxy(t, ids.api, "api", apiApp, dir, c.flags...)
			h1cfg, _ := peerTLS(t, ids.web.Socket, apiSA)
			dial := func() (*tls.Conn, *bufio.Reader) {
				conn, err := tls.Dial("tcp", api.Inbound, h1cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				return conn, bufio.NewReader(conn)
			}
			get := func(conn *tls.Conn, path string) {
				t.Helper()
				if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
			}
			// answer is the status of the next answer on br; 0 if there is
			// none (it runs on a goroutine of its own too: no t.Fatal).
			answer := func(br *bufio.Reader) int {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return 0
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode
			}
			fast, fastBR := dial()
			get(fast, "/fast") // its decision cached from here on
			if code := answer(fastBR); code != 200 {
				t.Fatalf("/fast: %d", code)
			}
			slow, slowBR := dial()
			get(slow, "/slow")
			slowDone := make(chan int, 1)
			go func() { slowDone <- answer(slowBR) }()
			// Requests on the other connection while /slow is decided. The
			// first may be read before /slow is; the later ones are not.
			const want = 3
			answered := 0
			for answered < want {
				get(fast, "/fast")
				if code := answer(fastBR); code != 200 {
					t.Fatalf("/fast while /slow was decided: %d", code)
				}
				select {
				case code := <-slowDone:
					t.Fatalf("/slow answered %d after %d requests on the other connection, want it held up alone (%d answered first)", code, answered, want)
				default:
				}
				answered++
			}
			if code := <-slowDone; code != 200 {
				t.Fatalf("/slow: %d, want allowed", code)
			}
		})
	}
}
