package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
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
