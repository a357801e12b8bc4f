package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/proxy/h1"
	"github.com/sigil-mesh/sigil/proxy/loop"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// outboundLoopVS has a route of every kind the outbound's loop decides
// on: ones it carries, ones it answers itself, ones it hands off.
const outboundLoopVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
  - match: [{uri: {prefix: /fault}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: api}}]
  - match: [{uri: {prefix: /mirror}}]
    mirror: {host: api}
    route: [{destination: {host: api}}]
  - match: [{uri: {prefix: /cors}}]
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}]}
    route: [{destination: {host: api}}]
  - match: [{uri: {prefix: /resp-headers}}]
    headers: {response: {set: {x-a: b}}}
    route: [{destination: {host: api}}]
  - match: [{uri: {prefix: /per-try}}]
    retries: {attempts: 2, perTryTimeout: 1s}
    route: [{destination: {host: api}}]
  - match: [{uri: {prefix: /retry-5xx}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: api}}]
  - match: [{uri: {prefix: /retry-limited}}]
    retries: {attempts: 2, retryOn: envoy-ratelimited}
    route: [{destination: {host: api}}]
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {prefix: /timeout}}]
    timeout: 2s
    route: [{destination: {host: api}}]
  - route: [{destination: {host: api}, headers: {request: {set: {x-routed: "yes"}}}}]
`

// TestOutboundLoopVerdicts: the outbound's loop carries routes it can
// (the endpoint's upstream and the route's timeout named in the
// verdict, the request's head rewritten), answers the ones the sidecar
// answers itself, and hands off every route feature it lacks, and gRPC
// and hosts outside the mesh.
func TestOutboundLoopVerdicts(t *testing.T) {
	h := testOutboundLoop(t, outboundLoopVS)
	verdict := func(raw string) loop.Verdict {
		t.Helper()
		var head h1.Head
		if err := h1.ParseHead([]byte(raw), true, &head); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		return h.Request(&loop.Caller{}, &head)
	}
	for _, path := range []string{"/fault", "/mirror", "/cors", "/resp-headers", "/per-try"} {
		if v := verdict("GET " + path + " HTTP/1.1\r\nHost: api\r\n\r\n"); !v.Handoff {
			t.Errorf("%s: not handed off: %+v", path, v)
		}
	}
	for _, raw := range []string{
		"POST /x HTTP/1.1\r\nHost: api\r\nContent-Type: application/grpc\r\nContent-Length: 5\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", // outside the mesh
	} {
		if v := verdict(raw); !v.Handoff {
			t.Errorf("%q: not handed off: %+v", raw, v)
		}
	}
	if v := verdict("GET /teapot HTTP/1.1\r\nHost: api\r\n\r\n"); v.Handoff || !strings.HasPrefix(string(v.Answer), "HTTP/1.1 418 ") || !strings.HasSuffix(string(v.Answer), "short and stout") {
		t.Errorf("direct response: %+v", v)
	}
	if v := verdict("GET /a/..;/admin HTTP/1.1\r\nHost: api\r\n\r\n"); v.Handoff || !strings.HasPrefix(string(v.Answer), "HTTP/1.1 400 ") {
		t.Errorf("a target the normalization refuses: %q", v.Answer)
	}
	for _, raw := range []string{
		"GET /timeout HTTP/1.1\r\nHost: api\r\n\r\n",
		"GET /retry-5xx HTTP/1.1\r\nHost: api\r\n\r\n",
		"POST /retry-5xx HTTP/1.1\r\nHost: api\r\nContent-Length: 3\r\n\r\n", // the loop keeps the body to send again
		"POST /plain HTTP/1.1\r\nHost: api\r\nContent-Length: 3\r\n\r\n",
	} {
		v := verdict(raw)
		if v.Handoff || v.Answer != nil || v.Upstream == nil || v.Exchange == nil {
			t.Fatalf("%q: not carried: %+v", raw, v)
		}
		if !strings.Contains(v.Upstream.Key(), "10.0.0.1:15006") || !strings.Contains(v.Upstream.Key(), "spiffe://example.org/ns/default/sa/api") {
			t.Errorf("%q: upstream %q", raw, v.Upstream.Key())
		}
		if want := map[bool]time.Duration{true: 2 * time.Second}[strings.Contains(raw, "/timeout")]; v.Timeout != want {
			t.Errorf("%q: timeout %s, want %s", raw, v.Timeout, want)
		}
		if strings.Contains(raw, "/plain") && !strings.Contains(string(v.Head), "X-Routed: yes\r\n") {
			t.Errorf("%q: the route's request headers are not in %q", raw, v.Head)
		}
		if strings.Contains(string(v.Head), "User-Agent") {
			t.Errorf("%q: a User-Agent the app did not send: %q", raw, v.Head)
		}
		v.Exchange.Done(200, nil)
	}
	// A chunked request's trailer section goes on as it came: so does
	// its declaration, which the parse takes out of the header.
	if v := verdict("POST /plain HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"); !strings.Contains(string(v.Head), "Trailer: X-Sum\r\n") {
		t.Errorf("the Trailer declaration is not forwarded: %q", v.Head)
	} else {
		v.Exchange.Done(200, nil)
	}
	// One upstream per endpoint, not one per request.
	a := verdict("GET /x HTTP/1.1\r\nHost: api\r\n\r\n")
	b := verdict("GET /y HTTP/1.1\r\nHost: api\r\n\r\n")
	if a.Upstream != b.Upstream {
		t.Errorf("two upstreams for one endpoint")
	}
	a.Exchange.Done(200, nil)
	b.Exchange.Done(200, nil)
}

// TestOutboundLoopSplitHandedOffWhole: a route that splits its traffic
// between a destination the loop carries and one it does not (response
// header changes, here) is handed off for every request. The goroutine
// path picks the destination again: had the loop handed off only the
// requests whose own pick fell on the second, that one would get the
// square of its weight (a quarter of a 50/50 split), the first the rest.
func TestOutboundLoopSplitHandedOffWhole(t *testing.T) {
	const vs = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
  - route:
    - {destination: {host: api}, weight: 50}
    - {destination: {host: api}, weight: 50, headers: {response: {set: {x-b: "yes"}}}}
`
	h := testOutboundLoop(t, vs)
	carried := 0
	for range 64 {
		var head h1.Head
		if err := h1.ParseHead([]byte("GET /x HTTP/1.1\r\nHost: api\r\n\r\n"), true, &head); err != nil {
			t.Fatal(err)
		}
		if v := h.Request(&loop.Caller{}, &head); !v.Handoff {
			carried++
			v.Exchange.Done(200, nil)
		}
	}
	if carried > 0 {
		t.Fatalf("%d of 64 requests of a split route carried on the loop: the goroutine path's pick of the rest skews the weights", carried)
	}
}

// testOutboundLoop is an outbound loop's Handler over the routes of vs,
// with eps, or else one endpoint of service api.
func testOutboundLoop(t *testing.T, vs string, eps ...*agentv1.Endpoint) *outboundLoop {
	t.Helper()
	self := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	names, err := meshNames(self, "", DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := traffic.Parse([]byte(vs), "vs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler), names: names, metrics: testMetrics(), id: &identity{id: self}, access: &jsonLines{}}
	o := testOutbound(p)
	if len(eps) == 0 {
		eps = []*agentv1.Endpoint{{Service: "api", Address: "10.0.0.1:15006", SpiffeId: "spiffe://example.org/ns/default/sa/api"}}
	}
	o.setState(traffic.Compile(1, rs), 1, 1, eps)
	return &outboundLoop{o: o, ups: map[upstreamKey]*loopUpstream{}}
}

// TestOutboundLoopSourceIPHash: a DestinationRule's consistentHash by
// useSourceIp sends every request of one caller to one endpoint on the
// loop too: the request the loop routes has the caller's address, as
// the goroutine path's has (without it every key was "", and the
// balancer spread the requests).
func TestOutboundLoopSourceIPHash(t *testing.T) {
	const dr = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api
  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}
`
	var eps []*agentv1.Endpoint
	for i := range 4 {
		eps = append(eps, &agentv1.Endpoint{Service: "api", Address: fmt.Sprintf("10.0.0.%d:15006", i+1), SpiffeId: "spiffe://example.org/ns/default/sa/api"})
	}
	h := testOutboundLoop(t, dr, eps...)
	seen := map[string]bool{}
	for i := range 32 {
		var head h1.Head
		if err := h1.ParseHead([]byte("GET /x HTTP/1.1\r\nHost: api\r\n\r\n"), true, &head); err != nil {
			t.Fatal(err)
		}
		v := h.Request(&loop.Caller{RemoteAddr: fmt.Sprintf("10.1.0.7:%d", 40000+i)}, &head)
		if v.Upstream == nil {
			t.Fatalf("not carried: %+v", v)
		}
		seen[v.Upstream.Key()] = true
		v.Exchange.Done(200, nil)
	}
	if len(seen) != 1 {
		t.Fatalf("one caller's requests went to %d endpoints: %v", len(seen), seen)
	}
}

// TestOutboundLoopRetryBudgetKeepsPeer: an answer a route would retry,
// relayed because the retry budget is spent, is recorded as the
// endpoint's that gave it (its identity, in the record's destination),
// as any relayed answer is.
func TestOutboundLoopRetryBudgetKeepsPeer(t *testing.T) {
	h := testOutboundLoop(t, outboundLoopVS)
	c := carried(t, h, "GET /retry-5xx HTTP/1.1\r\nHost: api\r\n\r\n")
	for c.cl.Pool.CanRetry() {
		defer c.cl.Pool.StartRetry()()
	}
	if next := c.Answered(503, nil); next != nil {
		t.Fatalf("retried past the budget: %v", next.Key())
	}
	c.Done(503, nil)
	if got, want := c.rec.peer.String(), "spiffe://example.org/ns/default/sa/api"; got != want {
		t.Fatalf("the relayed answer's peer %q, want %q", got, want)
	}
}

// TestOutboundLoopRateLimitedAnswers: an answer carrying
// x-envoy-ratelimited is retried under envoy-ratelimited only, whatever
// its status, as the goroutine path's tries decide (RetryOn.Response):
// 5xx does not retry a rate-limited 503 (it would add load where an
// upstream asked for less), envoy-ratelimited retries a limited 429.
func TestOutboundLoopRateLimitedAnswers(t *testing.T) {
	h := testOutboundLoop(t, outboundLoopVS)
	for _, tc := range []struct {
		path   string
		status int
		want   bool
	}{
		{"/retry-5xx", 503, false},
		{"/retry-limited", 429, true},
	} {
		c := carried(t, h, "GET "+tc.path+" HTTP/1.1\r\nHost: api\r\n\r\n")
		var answer h1.Head
		if err := h1.ParseHead([]byte(fmt.Sprintf("HTTP/1.1 %d X\r\nX-Envoy-Ratelimited: true\r\nContent-Length: 0\r\n\r\n", tc.status)), false, &answer); err != nil {
			t.Fatal(err)
		}
		if got := c.Answered(tc.status, &answer) != nil; got != tc.want {
			t.Errorf("%s: a rate-limited %d retried: %v, want %v", tc.path, tc.status, got, tc.want)
		}
		c.Done(200, nil)
	}
}

// TestOutboundLoopBrokenRequestBody: a request whose body breaks
// HTTP/1.1 before the answer began (the loop answers it 400) is
// recorded as the caller's protocol error, not as an answer of the
// endpoint cut off (UR, a failure in golden metrics, with its identity).
func TestOutboundLoopBrokenRequestBody(t *testing.T) {
	h := testOutboundLoop(t, outboundLoopVS)
	c := carried(t, h, "POST /x HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n")
	c.Done(400, errors.Join(loop.ErrBadRequest, h1.ErrFraming))
	if c.rec.flags != flagBadRequest || !c.rec.peer.IsZero() {
		t.Fatalf("flags %q, peer %q; want %q and none", c.rec.flags, c.rec.peer, flagBadRequest)
	}
}

// carried is h's call for the request head raw, which it must carry.
func carried(t *testing.T, h *outboundLoop, raw string) *outboundCall {
	t.Helper()
	var head h1.Head
	if err := h1.ParseHead([]byte(raw), true, &head); err != nil {
		t.Fatal(err)
	}
	v := h.Request(&loop.Caller{}, &head)
	c, ok := v.Exchange.(*outboundCall)
	if !ok {
		t.Fatalf("%q: not carried: %+v", raw, v)
	}
	return c
}

// TestOutboundLoopChunkedNotResent: a request with a chunked body is
// not sent again on its answer, as on the goroutine path, which keeps
// only a body of known length (readReplayable) and sends any other once.
func TestOutboundLoopChunkedNotResent(t *testing.T) {
	h := testOutboundLoop(t, outboundLoopVS)
	c := carried(t, h, "POST /retry-5xx HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n")
	if next := c.Answered(503, nil); next != nil {
		t.Fatalf("a chunked request sent again to %s", next.Key())
	}
	c.Done(503, nil)
	c = carried(t, h, "POST /retry-5xx HTTP/1.1\r\nHost: api\r\nContent-Length: 3\r\n\r\n")
	if next := c.Answered(503, nil); next == nil {
		t.Fatal("a request with a 3-byte body not sent again")
	}
	c.Done(200, nil)
}

// TestOutboundLoopRetryBackoff: the loop waits before each retry as the
// goroutine path's tries do (retryBackoff: from 25 ms, the upper half
// jittered, doubling).
func TestOutboundLoopRetryBackoff(t *testing.T) {
	h := testOutboundLoop(t, outboundLoopVS)
	c := carried(t, h, "GET /retry-5xx HTTP/1.1\r\nHost: api\r\n\r\n")
	for i, want := range []time.Duration{retryBackoffBase, 2 * retryBackoffBase} {
		if next := c.Answered(503, nil); next == nil {
			t.Fatalf("retry %d not sent", i+1)
		}
		if d := c.Backoff(); d < want/2 || d > want {
			t.Errorf("retry %d waits %v, want %v to %v", i+1, d, want/2, want)
		}
	}
	c.Done(200, nil)
}

// TestOutboundLoopCallerLeftWithinAnswer: an app that hangs up within
// the answer is recorded as the caller's end (DC) with the endpoint's
// status and identity, not as a reset of the endpoint (UR, a failure).
func TestOutboundLoopCallerLeftWithinAnswer(t *testing.T) {
	h := testOutboundLoop(t, outboundLoopVS)
	c := carried(t, h, "GET /x HTTP/1.1\r\nHost: api\r\n\r\n")
	c.Done(200, loop.ErrCallerHungUp)
	if c.rec.flags != flagDownstreamEnd || c.rec.code != 200 || c.rec.peer.IsZero() {
		t.Fatalf("flags %q, code %d, peer %q; want %q, 200 and the endpoint's", c.rec.flags, c.rec.code, c.rec.peer, flagDownstreamEnd)
	}
}
