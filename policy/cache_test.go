package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

func plan(t *testing.T, src string) (*keyPlan, string) {
	t.Helper()
	m, err := ast.ParseModuleWithOpts("p.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	return planFor([]*ast.Module{m})
}

func TestPlan(t *testing.T) {
	p, why := plan(t, webToAPI)
	if p == nil || len(p.paths) != 3 {
		t.Fatalf("plan %+v (%s)", p, why)
	}
	a, b := input("GET"), input("GET")
	b.Request.Path = "/other"
	if p.key(a) != p.key(b) {
		t.Fatal("the path is not read by the policy, yet changes the key")
	}
	if p.key(a) == p.key(input("POST")) {
		t.Fatal("the method is read by the policy, yet does not change the key")
	}
	for name, src := range map[string]string{
		"time":         "package sigil.authz\nallow if time.now_ns() > 0\n",
		"whole input":  "package sigil.authz\nallow if { x := input; x.request.method == \"GET\" }\n",
		"computed key": "package sigil.authz\nallow if { some k; input[k] == \"x\" }\n",
		"http.send":    "package sigil.authz\nallow if http.send({\"method\": \"get\", \"url\": \"http://x\"}).status_code == 200\n",
	} {
		if p, _ := plan(t, src); p != nil {
			t.Errorf("%s: cached (%v), which would be unsound", name, p.paths)
		}
	}
	// Headers read by a variable key: the whole header map is in the key.
	p, _ = plan(t, "package sigil.authz\nallow if { some k; input.request.headers[k] == \"yes\" }\n")
	if p == nil {
		t.Fatal("no plan for headers by key")
	}
	c := input("GET")
	c.Request.Headers = map[string]string{"x": "no"}
	if p.key(input("GET")) == p.key(c) {
		t.Fatal("headers read through a variable key but not in the key")
	}
}

// The cache never changes a decision: random inputs, decided with and
// without it, agree.
func TestCacheAgreesWithEvaluation(t *testing.T) {
	src := `package sigil.authz

default allow := false

allow if {
	input.source.namespace in {"a", "b"}
	input.request.method == "GET"
	startswith(input.request.path, "/pub")
}

allow if {
	input.request.headers["x-admin"] == "yes"
	input.destination.port == 8080
}
`
	ctx := context.Background()
	q, mods, err := compile(ctx, map[string]string{"p.rego": src})
	if err != nil {
		t.Fatal(err)
	}
	plan, why := planFor(mods)
	if plan == nil {
		t.Fatal(why)
	}
	e := &Engine{log: quiet()}
	e.cur.Store(&compiled{query: q, plan: plan, cache: &decisionCache{m: map[string]bool{}}})
	pickOne := func(xs ...string) string { return xs[rand.IntN(len(xs))] }
	for i := 0; i < 3000; i++ {
		in := &Input{
			Source:      PeerFromID(fmt.Sprintf("spiffe://td/ns/%s/sa/s", pickOne("a", "b", "c"))),
			Destination: Dest{Port: []int{8080, 9090}[rand.IntN(2)]},
			Request:     Request{Method: pickOne("GET", "POST"), Path: pickOne("/pub/x", "/priv", "/pub"), Headers: map[string]string{"x-admin": pickOne("yes", "no")}},
		}
		if rand.IntN(3) == 0 {
			delete(in.Request.Headers, "x-admin")
		}
		got := e.Decide(ctx, in)
		rs, err := q.Eval(ctx, rego.EvalParsedInput(in.value()))
		if err != nil || got.Err != nil {
			t.Fatal(err, got.Err)
		}
		want := len(rs) == 1 && rs[0].Expressions[0].Value == true
		if got.Allow != want {
			t.Fatalf("input %+v: cached engine says %v, evaluation says %v", in, got.Allow, want)
		}
	}
}

// The cache accounts for every byte it keeps and never passes its bound;
// a key longer than MaxCacheKeyBytes is not kept at all.
func TestCacheMemoryBoundAccounting(t *testing.T) {
	c := &decisionCache{}
	for i := 0; i < 20000; i++ {
		k := fmt.Sprintf("%d:%s", i, strings.Repeat("x", i%MaxCacheKeyBytes))
		c.put(k, i%2 == 0)
		if c.bytes > MaxCacheBytes {
			t.Fatalf("after %d puts the cache holds %d bytes, over %d", i+1, c.bytes, MaxCacheBytes)
		}
		if i%997 != 0 {
			continue
		}
		sum := 0
		for k := range c.m {
			sum += entryBytes(k)
		}
		if sum != c.bytes {
			t.Fatalf("accounted %d bytes, holds %d", c.bytes, sum)
		}
	}
	c.put(strings.Repeat("y", MaxCacheKeyBytes+1), true)
	if _, ok := c.get(strings.Repeat("y", MaxCacheKeyBytes+1)); ok {
		t.Fatal("a key over MaxCacheKeyBytes was cached")
	}
	// Putting a key again does not count it twice.
	c = &decisionCache{}
	c.put("k", true)
	c.put("k", false)
	if b, n := c.size(); b != entryBytes("k") || n != 1 {
		t.Fatalf("size %d bytes, %d entries", b, n)
	}
}

// Many requests with long distinct paths from a caller the policy denies
// leave the heap within the cache's bound (it once grew by 800 MB).
func TestCacheMemoryBoundHeap(t *testing.T) {
	src := `package sigil.authz

allow if not startswith(input.request.url_path, "/admin")
`
	ctx := context.Background()
	q, mods, err := compile(ctx, map[string]string{"p.rego": src})
	if err != nil {
		t.Fatal(err)
	}
	plan, why := planFor(mods)
	if plan == nil {
		t.Fatal(why)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for _, size := range []int{MaxCacheKeyBytes - 64, 16 << 10} {
		e := &Engine{log: quiet()}
		e.cur.Store(&compiled{query: q, plan: plan, cache: &decisionCache{}})
		before := heap()
		for i := 0; i < 8000; i++ {
			p := fmt.Sprintf("/admin/%08d/%s", i, strings.Repeat("a", size))
			if d := e.Decide(ctx, &Input{Request: Request{Method: "GET", Path: p}}); d.Allow || d.Err != nil {
				t.Fatalf("%s... allowed or failed: %+v", p[:20], d)
			}
		}
		after := heap()
		const slack = 8 << 20
		if after > before && after-before > MaxCacheBytes+slack {
			t.Errorf("paths of %d bytes: heap grew by %d MiB, over the cache bound of %d MiB", size, (after-before)>>20, MaxCacheBytes>>20)
		}
		b, n := e.CacheSize()
		t.Logf("paths of %d bytes: heap +%d KiB; cache %d KiB in %d entries", size, int64(after-before)>>10, b>>10, n)
		runtime.KeepAlive(e)
	}
}

// The query and the path without it are policy input, in the cache key.
func TestPolicyInputQueryAndURLPath(t *testing.T) {
	src := `package sigil.authz

allow if {
	input.request.url_path == "/reports"
	"viewer" in input.request.query.role
}
`
	ctx := context.Background()
	q, mods, err := compile(ctx, map[string]string{"p.rego": src})
	if err != nil {
		t.Fatal(err)
	}
	plan, why := planFor(mods)
	if plan == nil {
		t.Fatal(why)
	}
	e := &Engine{log: quiet()}
	e.cur.Store(&compiled{query: q, plan: plan, cache: &decisionCache{}})
	for _, tc := range []struct {
		in   Request
		want bool
	}{
		{Request{Path: "/reports?role=viewer", URLPath: "/reports", RawQuery: "role=viewer"}, true},
		{Request{Path: "/reports?role=admin&role=viewer"}, true},
		{Request{Path: "/reports?role=admin"}, false},
		{Request{Path: "/reports"}, false},
		{Request{Path: "/reports/x?role=viewer"}, false},
		{Request{Path: "/reports?role=view%65r"}, true},
		{Request{Path: "/reports?role=viewer;x"}, false},
	} {
		for range 2 { // evaluated, then cached
			in := &Input{Request: tc.in}
			if d := e.Decide(ctx, in); d.Allow != tc.want || d.Err != nil {
				t.Errorf("%q: allow %v, %v; want %v", tc.in.Path, d.Allow, d.Err, tc.want)
			}
		}
	}
}

// TestSettled: Settled is true with no policy loaded, false for an input
// the cache has no decision for until Decide made one, and always false
// for a policy whose decisions are not cached (time.now_ns: not pure).
func TestSettled(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, "", quiet())
	if err != nil {
		t.Fatal(err)
	}
	if !e.Settled(input("GET")) {
		t.Error("no policy loaded: not settled, want settled (denied at once)")
	}
	if err := e.Load(ctx, Source{Modules: map[string]string{"authz.rego": webToAPI}, Revision: "a"}); err != nil {
		t.Fatal(err)
	}
	if e.Settled(input("GET")) {
		t.Error("settled before any decision")
	}
	e.Decide(ctx, input("GET"))
	if !e.Settled(input("GET")) {
		t.Error("not settled after the same input was decided")
	}
	if e.Settled(input("POST")) {
		t.Error("settled for an input the policy reads differently")
	}
	impure := "package sigil.authz\n\nallow if time.now_ns() > 0\n"
	if err := e.Load(ctx, Source{Modules: map[string]string{"authz.rego": impure}, Revision: "b"}); err != nil {
		t.Fatal(err)
	}
	e.Decide(ctx, input("GET"))
	if e.Settled(input("GET")) {
		t.Error("settled under a policy whose decisions are not cached")
	}
}
