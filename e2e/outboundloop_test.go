package e2e

import (
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestOutboundEventLoop runs the caller's sidecar with
// --outbound-event-loop in front of two discovered instances of api
// (real agents, server, sidecars and apps; Go's HTTP client as the app):
// plain GETs kept alive on the loop, an 80/20 split between subsets,
// 5xx retries against an instance failing one request in three, the
// route's timeout, a request body, and the hand-off to the goroutine path
// of a route the loop does not carry (fault injection), counted by
// sigil_event_loop_handoffs_total. The whole e2e suite runs with the
// flag by `make e2e-event-loop`.
func TestOutboundEventLoop(t *testing.T) {
	t.Parallel()
	tm := startTrafficMeshWeb(t, []string{"--outbound-event-loop"},
		&backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2", appArgs: []string{"--fail-every", "3"}})
	handoffs := func() float64 {
		return metricValue(t, tm.web.Admin, `sigil_event_loop_handoffs_total\{listener="outbound"\} (\S+)`)
	}
	if n := metricValue(t, tm.web.Admin, `sigil_event_loop_connections\{listener="outbound"\} (\S+)`); n < 1 {
		t.Fatalf("sigil_event_loop_connections{listener=outbound} %v: the app's kept connections are not on the loop", n)
	}

	// Canary: 80/20 between subsets, v2 failing one in three but
	// retried (5xx) onto another endpoint or the same one.
	tm.apply(t, subsetsDR+"---\n"+`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  http:
  - match:
    - uri: {prefix: /slow}
    timeout: 200ms
    route:
    - destination: {host: api, subset: v1}
  - match:
    - uri: {prefix: /fault}
    fault:
      abort:
        httpStatus: 418
        percentage: {value: 100}
    route:
    - destination: {host: api}
  - retries:
      attempts: 3
      retryOn: 5xx
    route:
    - destination: {host: api, subset: v1}
      weight: 80
    - destination: {host: api, subset: v2}
      weight: 20
`)
	before := handoffs()
	// One client at a time, as TestTrafficRetriesAndTimeout: v2 fails
	// by a global count, which concurrent requests could line up.
	rs := tm.load(1000, 1, "/", nil)
	by, failed := count(rs)
	if failed > 0 {
		codes, errs := countStatus(rs)
		t.Fatalf("%d of 1000 requests failed with 5xx retries on: %v, %d errors", failed, codes, errs)
	}
	if v1 := float64(by["api-v1"]) / 10; math.Abs(v1-80) > 4 {
		t.Fatalf("80/20 split measured %.1f/%.1f over 1000 requests", v1, 100-v1)
	}
	if n := sumSeries(t, tm.web.Admin, "sigil_retries_total", nil); n < 20 {
		t.Fatalf("sigil_retries_total %v: v2's failures were not retried", n)
	}
	if after := handoffs(); after != before {
		t.Fatalf("%v connections handed to the goroutine path for routes the loop carries", after-before)
	}

	// The route's timeout: 504 after ~200 ms, the slow answer dropped.
	start := time.Now()
	r := tm.get("/slow?delay=1s", nil)
	if took := time.Since(start); r.status != http.StatusGatewayTimeout || took < 150*time.Millisecond || took > 700*time.Millisecond {
		t.Fatalf("timeout: status %d after %s", r.status, took)
	}
	if n := sumSeries(t, tm.web.Admin, "sigil_requests_total", map[string]string{"reporter": "source", "response_code": "504", "response_flags": "UT"}); n < 1 {
		t.Fatalf("no sigil_requests_total with 504 UT:\n%s", grepLines(httpGet(t, "http://"+tm.web.Admin+"/metrics"), "504"))
	}

	// A body (the policy lets only GET through), kept by the loop to
	// send again under the retries, and relayed whole.
	req, _ := http.NewRequest("GET", "http://api/echo", strings.NewReader("a body to echo"))
	resp, err := tm.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var echoed appReply
	json.NewDecoder(resp.Body).Decode(&echoed)
	resp.Body.Close()
	if resp.StatusCode != 200 || echoed.Body != "a body to echo" {
		t.Fatalf("GET with a body: %d %+v", resp.StatusCode, echoed)
	}
	if after := handoffs(); after != before {
		t.Fatalf("a request with a body was handed to the goroutine path")
	}

	// Fault injection is the goroutine path's: the request still gets
	// the route's abort, on a connection handed off.
	before = handoffs()
	if r := tm.get("/fault", nil); r.status != 418 {
		t.Fatalf("fault route: %d", r.status)
	}
	if after := handoffs(); after <= before {
		t.Fatalf("sigil_event_loop_handoffs_total %v → %v: the fault route was not handed off", before, after)
	}
}
