package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/policy"
)

// policyDoc is a Policy resource named name in namespace default with
// the given mode and modules (file name → Rego), as YAML.
func policyDoc(name, mode string, modules map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: security.sigil.dev/v1\nkind: Policy\nmetadata:\n  name: %s\n  namespace: default\nspec:\n  mode: %s\n  modules:\n", name, mode)
	for n, src := range modules {
		fmt.Fprintf(&b, "    %s: |\n", n)
		for _, l := range strings.Split(strings.TrimRight(src, "\n"), "\n") {
			fmt.Fprintf(&b, "      %s\n", l)
		}
	}
	return b.String()
}

// policyRevision is the revision a sidecar gives a Policy resource
// default/name (proxy.ResourceRevision).
func policyRevision(name string, modules map[string]string) string {
	enforced := map[string]string{}
	for n, src := range modules {
		if !strings.HasSuffix(n, "_test.rego") {
			enforced[n] = src
		}
	}
	return "default/" + name + "@" + policy.Digest(enforced)[:12]
}

const (
	// getOnly allows GET (and its test says so).
	getOnly = `package sigil.authz

default allow := false

allow if input.request.method == "GET"
`
	getOnlyTest = `package sigil.authz_test

import data.sigil.authz

test_get_allowed if authz.allow with input as {"request": {"method": "GET"}}
`
	// noAdmin allows GET except under /admin.
	noAdmin = `package sigil.authz

default allow := false

allow if {
	input.request.method == "GET"
	not startswith(input.request.url_path, "/admin")
}
`
	noAdminTest = `package sigil.authz_test

import data.sigil.authz

test_admin_denied if not authz.allow with input as {"request": {"method": "GET", "url_path": "/admin/x"}}
`
	// allowAll breaks noAdminTest's promise: the server must refuse it.
	allowAll = `package sigil.authz

allow := true
`
	// helloOnly, the dry-run candidate, would deny all but /hello.
	helloOnly = `package sigil.authz

default allow := false

allow if input.request.url_path == "/hello"
`
)

// A Policy resource applied with `sigil apply` reaches the sidecars on
// two nodes (two agents) within a second of apply's return and decides
// their requests; a policy whose own test fails is refused by apply,
// naming the test, and the one in force stays; a dryrun policy runs
// beside it, never blocking, with both decisions in the decision log.
func TestPolicyResourceDistribution(t *testing.T) {
	m := harness.StartMesh(t)
	m.Entry("node1", webSA, "--selector", "unix:uid:"+myUID)
	m.Entry("node2", apiSA, "--selector", "unix:uid:"+myUID)
	every := []string{"--stats-interval", "1s"}
	webAgent, apiAgent := m.StartAgent("node1", every...), m.StartAgent("node2", every...)
	v1 := map[string]string{"authz.rego": getOnly, "authz_test.rego": getOnlyTest}
	if out, err := sigilRun(t, m, "apply", "-f", writeFile(t, m.Dir, policyDoc("authz", "enforce", v1))); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	_, apiApp := harness.StartApp(t, "api")
	_, webApp := harness.StartApp(t, "web")
	decisions := filepath.Join(m.Dir, "api-decisions.log")
	// No --policy: the enforced policy is the resource's.
	// Each calls the other, so that both sidecars decide: their inbound
	// addresses are fixed before either starts.
	apiIn, webIn := freeAddr(t), freeAddr(t)
	api := harness.StartProxy(t, apiAgent, "api", apiApp, "", append(every, "--decision-log", decisions, "--inbound", apiIn, "--upstream", "web="+webIn+"@"+webSA)...)
	web := harness.StartProxy(t, webAgent, "web", webApp, "", append(every, "--inbound", webIn, "--upstream", "api="+apiIn+"@"+apiSA)...)
	rev1 := policyRevision("authz", v1)
	for _, p := range []*harness.ProxyProc{api, web} {
		p.WaitFor(`"msg":"policy loaded","revision":"`+regexp.QuoteMeta(rev1)+`"`, 20*time.Second)
	}
	get := func(path string) int {
		code, _ := curl(t, "-H", "Host: api", "http://"+web.Outbound+path)
		return code
	}
	// api → web: web's sidecar decides.
	getWeb := func(path string) int {
		code, _ := curl(t, "-H", "Host: web", "http://"+api.Outbound+path)
		return code
	}
	if code, codeWeb := get("/admin/x"), getWeb("/admin/x"); code != 200 || codeWeb != 200 {
		t.Fatalf("GET /admin/x under %s: api %d, web %d, want 200", rev1, code, codeWeb)
	}

	// A new policy reaches both sidecars, on two agents, within 1 s.
	v2 := map[string]string{"authz.rego": noAdmin, "authz_test.rego": noAdminTest}
	rev2 := policyRevision("authz", v2)
	if out, err := sigilRun(t, m, "apply", "-f", writeFile(t, m.Dir, policyDoc("authz", "enforce", v2))); err != nil || !strings.Contains(out, "policy.security.sigil.dev/authz configured") {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	applied := time.Now()
	for _, p := range []*harness.ProxyProc{api, web} {
		p.WaitFor(`"msg":"policy loaded","revision":"`+regexp.QuoteMeta(rev2)+`"`, time.Second)
		t.Logf("%s in force at %s %s after apply returned", rev2, p.Admin, time.Since(applied))
		if got := configPolicyRevision(t, p); got != rev2 {
			t.Fatalf("/config of %s: policy revision %q, want %q", p.Admin, got, rev2)
		}
	}
	for name, get := range map[string]func(string) int{"api": get, "web": getWeb} {
		if code := get("/admin/x"); code != 403 {
			t.Fatalf("GET %s/admin/x under %s: %d, want 403", name, rev2, code)
		}
		if code := get("/hello"); code != 200 {
			t.Fatalf("GET %s/hello under %s: %d, want 200", name, rev2, code)
		}
	}

	// A policy whose own test fails is refused, naming the test; the one
	// in force stays, and nothing of that apply is stored.
	bad := map[string]string{"authz.rego": allowAll, "authz_test.rego": noAdminTest}
	vs := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\n  namespace: default\nspec:\n  hosts: [api]\n  http:\n  - route:\n    - destination:\n        host: api\n---\n"
	out, err := sigilRun(t, m, "apply", "-f", writeFile(t, m.Dir, vs+policyDoc("authz", "enforce", bad)))
	if err == nil {
		t.Fatalf("a policy whose test fails was accepted:\n%s", out)
	}
	for _, want := range []string{"Policy default/authz", "sigil.authz_test.test_admin_denied", "authz_test.rego:5"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not name %q:\n%v", want, err)
		}
	}
	t.Logf("refused as it should be: %v", err)
	// --dry-run runs the same checks, in the same place.
	if out, err := sigilRun(t, m, "apply", "--dry-run", "-f", writeFile(t, m.Dir, policyDoc("authz", "enforce", bad))); err == nil || !strings.Contains(err.Error(), "sigil.authz_test.test_admin_denied") {
		t.Fatalf("apply --dry-run of a policy whose test fails: %v\n%s", err, out)
	}
	if got, _ := sigilRun(t, m, "get", "virtualservices"); strings.Contains(got, "api") {
		t.Errorf("the VirtualService of the refused apply was stored:\n%s", got)
	}
	for _, p := range []struct {
		proxy *harness.ProxyProc
		get   func(string) int
	}{{api, get}, {web, getWeb}} {
		if code := p.get("/admin/x"); code != 403 {
			t.Fatalf("GET /admin/x decided at %s after the refused apply: %d, want 403 (the old policy stays)", p.proxy.Admin, code)
		}
		if got := configPolicyRevision(t, p.proxy); got != rev2 {
			t.Fatalf("after the refused apply, revision %q at %s, want %q", got, p.proxy.Admin, rev2)
		}
	}

	// A dryrun policy beside it: requests it would deny pass, both
	// decisions are logged, and the would-be denials are counted.
	dry := map[string]string{"strict.rego": helloOnly}
	dryRev := policyRevision("strict", dry)
	if out, err := sigilRun(t, m, "apply", "-f", writeFile(t, m.Dir, policyDoc("strict", "dryrun", dry))); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	api.WaitFor(`"msg":"policy loaded","revision":"`+regexp.QuoteMeta(dryRev)+`","mode":"dryrun"`, time.Second)
	const n = 3
	for range n {
		if code := get("/other"); code != 200 {
			t.Fatalf("GET /other with a dry-run policy that denies it: %d, want 200 (dry run never blocks)", code)
		}
	}
	if code := get("/hello"); code != 200 {
		t.Fatalf("GET /hello: %d", code)
	}
	metrics := httpGet(t, "http://"+api.Admin+"/metrics")
	if want := fmt.Sprintf(`sigil_policy_dryrun_decisions_total{result="deny"} %d`, n); !strings.Contains(metrics, want) {
		t.Errorf("want %q in\n%s", want, grepLines(metrics, "sigil_policy_dryrun"))
	}
	// sigil stat shows the would-be denials, beside the requests.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got uint64
		for _, r := range waitStatRows(t, m, "svc", "-n", "default").Rows {
			if r.Name == "api" {
				got = r.Golden.DryRunDenied
			}
		}
		if got == n {
			break
		}
		if got > n || time.Now().After(deadline) {
			t.Fatalf("sigil stat: api's dryrun_denied %d, want %d", got, n)
		}
		time.Sleep(500 * time.Millisecond) // the window publishes a slot when it completes; nothing to wait on from outside
	}
	out, err = sigilRun(t, m, "stat", "svc", "-n", "default")
	if err != nil || !strings.Contains(out, "DRYRUN_DENIED") {
		t.Fatalf("sigil stat: %v\n%s", err, out)
	}
	t.Logf("sigil stat:\n%s", out)

	// The decision log is flushed every second: wait for the last line.
	byMode := waitDecisions(t, decisions, "/hello", 2)
	for _, mode := range []string{"enforce", "dryrun"} {
		d, ok := byMode[mode]
		if !ok {
			t.Fatalf("no %s decision for /hello in the decision log", mode)
		}
		wantRev := map[string]string{"enforce": rev2, "dryrun": dryRev}[mode]
		if d.Bundles.Sigil.Revision != wantRev || d.Result == nil || !*d.Result || d.Path != "sigil/authz/allow" {
			t.Errorf("%s decision %+v: want revision %s, result true", mode, d, wantRev)
		}
	}
	// Listed and deleted by kind name, as kubectl users type it.
	out, err = sigilRun(t, m, "get", "policies")
	if err != nil || !strings.Contains(out, "enforce: sidecars of namespace default") || !strings.Contains(out, "dryrun: sidecars of namespace default") {
		t.Fatalf("sigil get policies: %v\n%s", err, out)
	}
	if out, err := sigilRun(t, m, "delete", "policy", "strict"); err != nil {
		t.Fatalf("sigil delete policy strict: %v\n%s", err, out)
	}
	api.WaitFor(`"msg":"policy removed","mode":"dryrun"`, 5*time.Second)
}

// loggedDecision is what the test reads of a decision log line.
type loggedDecision struct {
	Labels  map[string]string `json:"labels"`
	Path    string            `json:"path"`
	Result  *bool             `json:"result"`
	Bundles struct {
		Sigil struct {
			Revision string `json:"revision"`
		} `json:"sigil"`
	} `json:"bundles"`
	Input struct {
		Request struct {
			URLPath string `json:"url_path"`
		} `json:"request"`
	} `json:"input"`
}

// waitDecisions waits (on the sidecar's one-second flush) until the
// decision log at path holds want decisions for urlPath, and returns the
// last of each mode (labels.mode).
func waitDecisions(t *testing.T, path, urlPath string, want int) map[string]loggedDecision {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := map[string]loggedDecision{}
		got := 0
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var d loggedDecision
				if json.Unmarshal(sc.Bytes(), &d) == nil && d.Input.Request.URLPath == urlPath {
					out[d.Labels["mode"]] = d
					got++
				}
			}
			f.Close()
		}
		if got >= want {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d decisions for %s in %s within 10s, want %d", got, urlPath, path, want)
		}
		// The flush is a timer in another process with no signal to
		// await; poll the file.
		time.Sleep(100 * time.Millisecond)
	}
}

// configPolicyRevision is the revision of the policy in force, from the
// sidecar's /config.
func configPolicyRevision(t *testing.T, p *harness.ProxyProc) string {
	t.Helper()
	var cfg struct {
		Policy struct {
			Revision string `json:"revision"`
		} `json:"policy"`
	}
	if err := json.Unmarshal([]byte(httpGet(t, "http://"+p.Admin+"/config")), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Policy.Revision
}
