package e2e

import (
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// sigil tap, through the real binaries: the CLI asks the server, the
// server the agent of api's node, the agent api's sidecar; the sidecar's
// event comes back up the same way. A request shows within 2 s of being
// sent, and no credential it carried (Authorization, Cookie, a token in
// the query) ever shows.
func TestTapShowsRequestsNeverCredentials(t *testing.T) {
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"})
	socket := adminv1.AdminSocket(tm.ids.m.DataDir)
	cli := harness.Start(t, "sigil", "tap", "api", "--admin-socket", socket, "--max", "5")
	// The sidecar acknowledges the tap before a request is sent: the 2 s
	// below is the event's journey, not the tap's start-up.
	cli.WaitFor(`tapping api\.default: 1 sidecar`, 15*time.Second)

	sent := time.Now()
	r := tm.get("/orders/42?token=secret-query", map[string]string{
		"Authorization":       "Bearer secret-xyz",
		"Cookie":              "session=secret-cookie",
		"Proxy-Authorization": "Basic secret-proxy",
	})
	if r.err != nil || r.status != 200 {
		t.Fatalf("request: %d %v", r.status, r.err)
	}
	line := cli.WaitFor(`in  GET api /orders/42 status=200 latency=\S+ src=(\S+) dst=(\S+) reporter=(\S+)`, 2*time.Second)
	if took := time.Since(sent); took > 2*time.Second {
		t.Fatalf("event shown %s after the request was sent, want within 2 s", took)
	}
	if line[1] != webSA || line[2] != apiSA || line[3] != apiSA {
		t.Fatalf("identities src=%s dst=%s reporter=%s, want %s → %s reported by %s", line[1], line[2], line[3], webSA, apiSA, apiSA)
	}
	for range 4 {
		tm.get("/orders/43", map[string]string{"Authorization": "Bearer secret-xyz"})
	}
	cli.WaitFor(`tap ended: max events reached \(5 events`, 10*time.Second)
	if code := cli.Wait(10 * time.Second); code != 0 {
		t.Fatalf("sigil tap exited %d", code)
	}
	out := cli.Output()
	for _, secret := range []string{"secret-xyz", "secret-cookie", "secret-proxy", "secret-query", "Bearer"} {
		if strings.Contains(out, secret) {
			t.Fatalf("sigil tap printed %q:\n%s", secret, out)
		}
	}

	// The JSON form carries the same fields and no more.
	js := harness.Start(t, "sigil", "tap", "api", "--admin-socket", socket, "--max", "1", "-o", "json", "--path", "/json", "--method", "post")
	js.WaitFor(`tapping api\.default: 1 sidecar`, 15*time.Second)
	tm.get("/json/skipped", nil) // a GET: not this tap's method
	postJSON(t, tm, "/json/x?token=secret-query")
	js.WaitFor(`"method":"POST".*"path":"/json/x"`, 2*time.Second)
	if code := js.Wait(10 * time.Second); code != 0 {
		t.Fatalf("sigil tap -o json exited %d", code)
	}
	if out := js.Output(); strings.Contains(out, "secret") || strings.Contains(out, "/json/skipped") {
		t.Fatalf("sigil tap -o json printed what it must not:\n%s", out)
	}
}

func postJSON(t *testing.T, tm *trafficMesh, path string) {
	t.Helper()
	resp, err := tm.client.Post("http://api"+path, "application/json", strings.NewReader(`{"password":"secret-body"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// sigil top, through the real binaries: the busiest paths of a sample of
// api's requests, with counts, latencies and success rates.
func TestTopShowsBusiestPaths(t *testing.T) {
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"})
	socket := adminv1.AdminSocket(tm.ids.m.DataDir)
	top := harness.Start(t, "sigil", "top", "api", "--admin-socket", socket, "--once", "6s")
	// sigil top prints nothing before its table: wait until the server
	// has the tap, then send for a few seconds (the sidecar takes the tap
	// up within moments of it).
	tm.ids.m.Server.WaitFor(`"msg":"tap started"`, 15*time.Second)
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		tm.load(10, 2, "/busy", nil)
		tm.get("/quiet", nil)
	}
	if code := top.Wait(15 * time.Second); code != 0 {
		t.Fatalf("sigil top exited %d", code)
	}
	out := top.Output()
	busy := regexp.MustCompile(`(?m)^inbound\s+GET\s+/busy\s+(\d+)\s+\S+ms\s+\S+ms\s+\S+ms\s+100\.00%$`).FindStringSubmatch(out)
	quiet := regexp.MustCompile(`(?m)^inbound\s+GET\s+/quiet\s+(\d+)\s`).FindStringSubmatch(out)
	if busy == nil || quiet == nil {
		t.Fatalf("no /busy and /quiet rows in:\n%s", out)
	}
	if strings.Index(out, "/busy") > strings.Index(out, "/quiet") {
		t.Fatalf("/busy (%s requests) not above /quiet (%s):\n%s", busy[1], quiet[1], out)
	}
}

// A tap ends with its client, and without its server: a CLI killed
// mid-tap (no goodbye) has the server stop the tap on the sidecar; a
// server killed mid-tap leaves nobody to renew it, and the sidecar drops
// it on its own within the tap's TTL (10 s) (fail safe).
func TestTapEndsWithoutItsClientOrServer(t *testing.T) {
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"})
	socket := adminv1.AdminSocket(tm.ids.m.DataDir)
	sidecar := tm.backends["api-v1"].proxy

	cli := harness.Start(t, "sigil", "tap", "api", "--admin-socket", socket)
	cli.WaitFor(`tapping api\.default: 1 sidecar`, 15*time.Second)
	first := sidecar.WaitFor(`"msg":"tap started".*"tap_id":"([0-9a-f]+)"`, 5*time.Second)[1]
	cli.Signal(syscall.SIGKILL)
	sidecar.WaitFor(`"msg":"tap stopped".*"tap_id":"`+first+`"`, 10*time.Second)

	cli = harness.Start(t, "sigil", "tap", "api", "--admin-socket", socket)
	cli.WaitFor(`tapping api\.default: 1 sidecar`, 15*time.Second)
	// The sidecar logged the start before it acknowledged it, and the CLI
	// printed the acknowledgement: the line is there.
	started := regexp.MustCompile(`"msg":"tap started".*"tap_id":"([0-9a-f]+)"`).FindAllStringSubmatch(sidecar.Output(), -1)
	if len(started) != 2 || started[1][1] == first {
		t.Fatalf("sidecar's tap starts %v, want a second tap besides %s", started, first)
	}
	second := started[1][1]
	tm.ids.m.Server.Signal(syscall.SIGKILL)
	// The agent or the sidecar, whichever sees the TTL pass first, ends it.
	sidecar.WaitFor(`"msg":"tap (lapsed: not renewed|stopped)".*"tap_id":"`+second+`"`, tapTTL+5*time.Second)
}

// tapTTL is package tap's TTL, as the sidecar applies it.
const tapTTL = 10 * time.Second
