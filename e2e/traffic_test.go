package e2e

import (
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

func strconvItoa(n int) string { return strconv.Itoa(n) }

// An 80/20 split over 2000 requests lands within ±3 points; shifting
// 0→100 in steps under continuous load fails no request; sidecars report
// the version they run; a bad resource is refused by name and field and
// changes nothing; --dry-run changes nothing.
func TestTrafficSplitAndShift(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"})
	out := tm.apply(t, subsetsDR+"---\n"+splitVS(80, 20))
	if !strings.Contains(out, "destinationrule.networking.istio.io/api created") || !strings.Contains(out, "virtualservice.networking.istio.io/api created") {
		t.Fatalf("apply said: %s", out)
	}
	by, failed := count(tm.load(2000, 8, "/", nil))
	if failed > 0 {
		t.Fatalf("%d requests failed", failed)
	}
	v1 := float64(by["api-v1"]) / 20
	if math.Abs(v1-80) > 3 {
		t.Fatalf("80/20 split measured %.1f/%.1f over 2000 requests", v1, 100-v1)
	}
	t.Logf("80/20 split measured %.1f/%.1f", v1, 100-v1)

	// Refusals: the resource and field are named; the version stays.
	admin := tm.admin()
	before, _ := admin.ListProxies(t.Context())
	bad := strings.Replace(splitVS(80, 20), "weight: 20", "weight: -20", 1)
	_, err := harness.Run(t, "sigil", "apply", "-f", writeTemp(t, tm, bad), "--admin-socket", adminv1.AdminSocket(tm.ids.m.DataDir))
	if err == nil || !strings.Contains(err.Error(), "VirtualService default/api") || !strings.Contains(err.Error(), "spec.http[0].route") {
		t.Fatalf("bad weights: %v", err)
	}
	unsupported := strings.Replace(splitVS(80, 20), "  - route:", "  - mirrors: [{destination: {host: api}}]\n    route:", 1)
	if _, err := harness.Run(t, "sigil", "apply", "-f", writeTemp(t, tm, unsupported), "--admin-socket", adminv1.AdminSocket(tm.ids.m.DataDir)); err == nil || !strings.Contains(err.Error(), `"mirrors" is not supported`) {
		t.Fatalf("unsupported field: %v", err)
	}
	dry := harness.MustRun(t, "sigil", "apply", "--dry-run", "-f", writeTemp(t, tm, splitVS(50, 50)), "--admin-socket", adminv1.AdminSocket(tm.ids.m.DataDir))
	if !strings.Contains(dry, "configured (dry run)") || !strings.Contains(dry, "-       \"weight\": 80") && !strings.Contains(dry, `"weight": 80`) {
		t.Fatalf("dry run said: %s", dry)
	}
	after, _ := admin.ListProxies(t.Context())
	if after[0].CurrentVersion != before[0].CurrentVersion {
		t.Fatalf("a refused or dry-run apply moved the version %d → %d", before[0].CurrentVersion, after[0].CurrentVersion)
	}
	get := harness.MustRun(t, "sigil", "get", "proxies", "--admin-socket", adminv1.AdminSocket(tm.ids.m.DataDir))
	if strings.Contains(get, "STALE") || strings.Count(get, "SYNCED") != 3 {
		t.Fatalf("get proxies:\n%s", get)
	}

	// Shift 0→100 in steps under continuous load: no failed request.
	var stop atomic.Bool
	var total, fails atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && total.Load() < 200000 {
				r := tm.get("/", nil)
				total.Add(1)
				if r.err != nil || r.status != 200 {
					fails.Add(1)
					firstErr.CompareAndSwap(nil, r)
				}
			}
		}()
	}
	for _, w := range []int{0, 25, 50, 75, 100} {
		tm.apply(t, splitVS(100-w, w))
	}
	stop.Store(true)
	wg.Wait()
	if fails.Load() > 0 {
		t.Fatalf("%d of %d requests failed while shifting; first: %+v", fails.Load(), total.Load(), firstErr.Load())
	}
	by, _ = count(tm.load(200, 8, "/", nil))
	if by["api-v1"] != 0 || by["api-v2"] != 200 {
		t.Fatalf("at 0/100: %v", by)
	}
}

func writeTemp(t *testing.T, tm *trafficMesh, content string) string {
	t.Helper()
	return writeFile(t, tm.ids.m.Dir, content)
}

// Mirroring 50 %: the mirror sees about half the requests, marked with the
// -shadow Host; the primary's latency is the same while the mirror is slow
// (v3 answers after 1 s) and after it is gone.
func TestTrafficMirror(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"},
		&backend{name: "api-v3", version: "v3", appArgs: []string{"--delay", "1s"}})
	mirrorTo := func(subset string) string {
		return strings.Replace(subsetsDR, "  - name: v2\n", "  - name: v3\n    labels: {version: v3}\n  - name: v2\n", 1) + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  http:
  - route:
    - destination: {host: api, subset: v1}
    mirror: {host: api, subset: ` + subset + `}
    mirrorPercentage: {value: 50}
`
	}
	tm.apply(t, mirrorTo("v2"))
	base := statsOf(t, tm.backends["api-v2"].addr)
	rs := tm.load(400, 8, "/", nil)
	by, failed := count(rs)
	if failed > 0 || by["api-v1"] != 400 {
		t.Fatalf("primary: %v, %d failed", by, failed)
	}
	p50Fast := p50(rs)
	// Mirrored requests are fire-and-forget; wait for them to land.
	deadline := time.Now().Add(10 * time.Second)
	var shadow, all int64
	for time.Now().Before(deadline) {
		st := statsOf(t, tm.backends["api-v2"].addr)
		shadow, all = st["shadow"]-base["shadow"], st["requests"]-base["requests"]
		if shadow >= 160 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if shadow < 160 || shadow > 240 || all != shadow {
		t.Fatalf("mirror saw %d of 400 requests (%d in all); want about 200, all with the -shadow Host", shadow, all)
	}
	tm.apply(t, mirrorTo("v3"))
	rs = tm.load(400, 8, "/", nil)
	if _, failed := count(rs); failed > 0 || p50(rs) > p50Fast+100*time.Millisecond {
		t.Fatalf("with a slow mirror: %d failed, p50 %s (fast mirror: %s)", failed, p50(rs), p50Fast)
	}
	p50Slow := p50(rs)
	tm.backends["api-v3"].app.Stop() // the mirror is down
	rs = tm.load(400, 8, "/", nil)
	if _, failed := count(rs); failed > 0 || p50(rs) > p50Fast+100*time.Millisecond {
		t.Fatalf("with the mirror down: %d failed, p50 %s", failed, p50(rs))
	}
	t.Logf("mirror saw %d/400; primary p50 %s (fast mirror), %s (slow mirror), %s (mirror down)", shadow, p50Fast, p50Slow, p50(rs))
}

func p50(rs []result) time.Duration {
	ds := make([]time.Duration, len(rs))
	for i, r := range rs {
		ds[i] = r.took
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// Fault injection under a header match: abort 50 % with 503 for the
// tester only; a 2 s delay for the tester only.
func TestTrafficFaults(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"})
	tm.apply(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  http:
  - match:
    - headers:
        end-user: {exact: tester}
    fault:
      abort:
        httpStatus: 503
        percentage: {value: 50}
    route:
    - destination: {host: api}
  - route:
    - destination: {host: api}
`)
	tester := map[string]string{"end-user": "tester"}
	matched, _ := countStatus(tm.load(400, 8, "/", tester))
	others, _ := countStatus(tm.load(400, 8, "/", map[string]string{"end-user": "someone"}))
	if f := matched[503]; f < 160 || f > 240 {
		t.Fatalf("abort 50%%: %d of 400 matched requests got 503: %v", f, matched)
	}
	if others[200] != 400 {
		t.Fatalf("unmatched requests: %v", others)
	}
	tm.apply(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  http:
  - match:
    - headers:
        end-user: {exact: tester}
    fault:
      delay:
        fixedDelay: 2s
    route:
    - destination: {host: api}
  - route:
    - destination: {host: api}
`)
	slow := tm.load(16, 16, "/", tester)
	fast := tm.load(16, 16, "/", nil)
	if p := p50(slow); p < 2*time.Second {
		t.Fatalf("matched p50 %s, want above 2s", p)
	}
	// Half the delay: an unmatched request that took the fault would take
	// 2 s; one that did not takes milliseconds, or a few hundred on a
	// loaded 2-core CI machine (525 ms seen once with a 500 ms bound).
	if p := p50(fast); p > time.Second {
		t.Fatalf("unmatched p50 %s, want under 1s (the 2s delay not applied)", p)
	}
}

func countStatus(rs []result) (map[int]int, int) {
	out := map[int]int{}
	errs := 0
	for _, r := range rs {
		if r.err != nil {
			errs++
			continue
		}
		out[r.status]++
	}
	return out, errs
}

// A backend failing one request in three becomes near-zero client-visible
// errors with retries; a 200 ms timeout cuts a 1 s backend at about 200 ms.
func TestTrafficRetriesAndTimeout(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1", appArgs: []string{"--fail-every", "3"}})
	// One client at a time: the backend fails by a global count (every
	// third request), and concurrent clients could line a request's every
	// attempt up with failing slots, which tests scheduling, not retries.
	before, _ := countStatus(tm.load(300, 1, "/", nil))
	tm.apply(t, `apiVersion: networking.istio.io/v1
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
    - destination: {host: api}
  - retries:
      attempts: 3
      retryOn: 5xx
    route:
    - destination: {host: api}
`)
	after, _ := countStatus(tm.load(300, 1, "/", nil))
	if before[500] < 80 {
		t.Fatalf("without retries only %d of 300 failed; the backend should fail one in three", before[500])
	}
	if after[200] < 297 {
		t.Fatalf("with retries: %v\n%s", after, grepLines(httpGet(t, "http://"+tm.web.Admin+"/metrics"), "retr"))
	}
	t.Logf("1-in-3 failing backend: %d/300 errors without retries, %d/300 with", 300-before[200], 300-after[200])
	start := time.Now()
	r := tm.get("/slow?delay=1s", nil)
	took := time.Since(start)
	if r.status != 504 || took < 150*time.Millisecond || took > 700*time.Millisecond {
		t.Fatalf("timeout: status %d after %s", r.status, took)
	}
}

// maxConnections 1 with 1 pending request under 20 concurrent requests
// overflows fast with 503; an endpoint answering 500 is ejected and the
// traffic moves to the healthy one.
func TestTrafficConnectionPoolAndOutlier(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2", appArgs: []string{"--status", "500"}})
	tm.apply(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api
spec:
  host: api
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool:
        tcp: {maxConnections: 1}
        http: {http1MaxPendingRequests: 1}
  - name: v2
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  http:
  - match:
    - uri: {prefix: /pool}
    route:
    - destination: {host: api, subset: v1}
  - retries: {attempts: 0}
    route:
    - destination: {host: api}
`)
	rs := tm.load(20, 20, "/pool?delay=500ms", nil)
	st, _ := countStatus(rs)
	overflowFast := 0
	for _, r := range rs {
		if r.status == 503 && r.took < 300*time.Millisecond && strings.Contains(r.header.Get("X-Sigil-Overflow"), "full") {
			overflowFast++
		}
	}
	if st[200] < 1 || st[200] > 3 || overflowFast < 15 {
		t.Fatalf("pool of 1+1 under 20 concurrent: %v, %d overflowed fast", st, overflowFast)
	}
	// Outlier detection: v2 answers 500 to everything.
	first, _ := countStatus(tm.load(40, 4, "/", nil))
	later, _ := countStatus(tm.load(200, 4, "/", nil))
	if later[200] < 198 {
		t.Fatalf("after ejection: %v (before: %v)", later, first)
	}
	if !strings.Contains(httpGet(t, "http://"+tm.web.Admin+"/metrics"), `sigil_outlier_ejections_total{destination_service="api.default.svc.cluster.local"}`) {
		t.Fatal("no ejection counted")
	}
	t.Logf("pool: %v (%d overflowed in <300ms); outlier: first 40 %v, next 200 %v", st, overflowFast, first, later)
}

// An endpoint leaves the pool when its sidecar stops: gracefully at once,
// and no request fails meanwhile.
func TestTrafficEndpointDeregistration(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"}, &backend{name: "api-v2", version: "v2"})
	var stop atomic.Bool
	var fails, total atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && total.Load() < 100000 {
				r := tm.get("/", nil)
				total.Add(1)
				if r.err != nil || r.status != 200 {
					fails.Add(1)
				}
			}
		}()
	}
	tm.backends["api-v2"].proxy.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ss, err := tm.admin().ListServices(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(ss) > 0 && ss[0].Name == "api" && ss[0].Endpoints == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint not removed: %+v", ss)
		}
		time.Sleep(20 * time.Millisecond)
	}
	by, _ := count(tm.load(100, 4, "/", nil))
	stop.Store(true)
	wg.Wait()
	if by["api-v2"] != 0 || fails.Load() > 0 {
		t.Fatalf("after v2's sidecar stopped: %v; %d of %d requests failed", by, fails.Load(), total.Load())
	}
}

// Redirect, rewrite and header changes, as Istio's YAML writes them.
func TestTrafficRewriteRedirectHeaders(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"})
	tm.apply(t, `apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api.default.svc.cluster.local]
  http:
  - match:
    - uri: {prefix: /old}
    redirect:
      uri: /new
      redirectCode: 308
  - match:
    - uri: {prefix: /v1/}
    rewrite:
      uri: /internal/
    headers:
      request:
        set: {x-route: rewritten}
        remove: [x-drop-me]
      response:
        add: {x-served-by: sigil}
    route:
    - destination: {host: api}
      headers:
        request:
          add: {x-dest: v1}
  - route:
    - destination: {host: api}
`)
	if code, loc := tm.redirectOf(t, "http://api/old/thing"); code != 308 || loc != "http://api/new" {
		t.Fatalf("redirect: %d %q", code, loc)
	}
	req, _ := http.NewRequest("GET", "http://api/v1/users?id=7", nil)
	req.Header.Set("X-Drop-Me", "secret")
	resp, err := tm.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Path    string            `json:"path"`
		Headers map[string]string `json:"headers"`
	}
	json.NewDecoder(resp.Body).Decode(&r)
	resp.Body.Close()
	if r.Path != "/internal/users" || r.Headers["X-Route"] != "rewritten" || r.Headers["X-Dest"] != "v1" || r.Headers["X-Drop-Me"] != "" {
		t.Fatalf("app saw %+v", r)
	}
	if resp.Header.Get("X-Served-By") != "sigil" {
		t.Fatalf("response headers %v", resp.Header)
	}
}

// A sidecar may register only a service its identity may serve: web's
// identity claiming to be api is refused (and audited), and api's traffic
// never reaches it.
func TestTrafficImpostorEndpointRefused(t *testing.T) {
	t.Parallel()
	tm := startTrafficMesh(t, &backend{name: "api-v1", version: "v1"})
	_, evilApp := harness.StartApp(t, "evil")
	harness.StartProxy(t, tm.ids.web, "api", evilApp, tm.ids.policyDir, "--label", "version=v1")
	auditLog := filepath.Join(tm.ids.m.DataDir, "audit.log")
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(auditLog)
		if strings.Contains(string(b), `"type":"endpoint.refused"`) && strings.Contains(string(b), `"subject":"`+webSA+`"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the impostor's registration was not refused")
		}
		time.Sleep(50 * time.Millisecond) // waiting on the agent's next report, a file the server appends to
	}
	by, failed := count(tm.load(200, 4, "/", nil))
	if failed > 0 || by["api-v1"] != 200 {
		t.Fatalf("api's traffic: %v, %d failed", by, failed)
	}
	ss, err := tm.admin().ListServices(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		if s.Name == "api" && (s.Endpoints != 1 || strings.Join(s.Identities, ",") != apiSA) {
			t.Fatalf("api's endpoints: %+v", s)
		}
	}
}
