package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// nsPolicy lets any workload of prod or staging call reviews in prod or
// staging: the destination's namespace is in the input too.
const nsPolicy = `package sigil.authz

default allow := false

allow if {
	input.source.namespace in {"prod", "staging"}
	input.destination.service == "reviews"
	input.destination.namespace in {"prod", "staging"}
}
`

// namespacesMesh is reviews in prod and reviews in staging (one sidecar
// each, on their own nodes), and a client sidecar in each namespace.
type namespacesMesh struct {
	m                    *harness.Mesh
	prodClient, stClient *http.Client
	prodOut              string
}

func startNamespacesMesh(t *testing.T) *namespacesMesh {
	t.Helper()
	m := harness.StartMesh(t)
	dir := filepath.Join(m.Dir, "policy")
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(nsPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	sidecar := func(node, ns, sa, app string) *harness.ProxyProc {
		m.Entry(node, "spiffe://"+harness.TrustDomain+"/ns/"+ns+"/sa/"+sa, "--selector", "unix:uid:"+myUID)
		_, addr := harness.StartApp(t, app)
		return harness.StartProxy(t, m.StartAgent(node), sa, addr, dir, "--label", "version=v1")
	}
	sidecar("n-prod-reviews", "prod", "reviews", "reviews-prod")
	sidecar("n-staging-reviews", "staging", "reviews", "reviews-staging")
	prod := sidecar("n-prod-client", "prod", "client", "client-prod")
	staging := sidecar("n-staging-client", "staging", "client", "client-staging")
	via := func(out string) *http.Client {
		u, _ := url.Parse("http://" + out)
		return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u)}}
	}
	nm := &namespacesMesh{m: m, prodClient: via(prod.Outbound), stClient: via(staging.Outbound), prodOut: prod.Outbound}
	// Each client's sidecar has learned both reviews endpoints once it
	// reaches them (discovery has no signal the test can await).
	for _, c := range []*http.Client{nm.prodClient, nm.stClient} {
		for _, host := range []string{"reviews.prod", "reviews.staging"} {
			deadline := time.Now().Add(30 * time.Second)
			for nm.call(t, c, host).status != http.StatusOK {
				if time.Now().After(deadline) {
					t.Fatalf("%s never reachable", host)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	return nm
}

type nsReply struct {
	status  int
	service string
}

func (nm *namespacesMesh) call(t *testing.T, c *http.Client, host string) nsReply {
	t.Helper()
	resp, err := c.Get("http://" + host + "/")
	if err != nil {
		return nsReply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r appReply
	json.Unmarshal(b, &r)
	return nsReply{status: resp.StatusCode, service: r.Service}
}

// apply runs the real `sigil apply -f` and waits until all four sidecars
// run the new version.
func (nm *namespacesMesh) apply(t *testing.T, yaml string) {
	t.Helper()
	sock := adminv1.AdminSocket(nm.m.DataDir)
	harness.MustRun(t, "sigil", "apply", "-f", writeFile(t, nm.m.Dir, yaml), "--admin-socket", sock)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ps, err := adminv1.NewAdminClient(sock).ListProxies(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		stale := 0
		for _, p := range ps {
			if p.Stale {
				stale++
			}
		}
		if stale == 0 && len(ps) == 4 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecars still stale: %+v", ps)
		}
		time.Sleep(20 * time.Millisecond) // polling the server's own view; there is no push to wait on from outside
	}
}

const nsRules = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: prod}
spec:
  host: reviews.prod.svc.cluster.local
  subsets:
  - name: v1
    labels: {version: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: staging}
spec:
  host: reviews.staging.svc.cluster.local
  subsets:
  - name: v1
    labels: {version: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
---
# Exported to staging's own sidecars only: they get 418 from reviews,
# while prod's calls to reviews.staging are untouched.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: staging}
spec:
  hosts: [reviews]
  exportTo: ["."]
  http:
  - fault:
      abort: {httpStatus: 418}
    route:
    - destination: {host: reviews, subset: v1}
---
# An outside host whose first label is a mesh service's: kept apart.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-example, namespace: prod}
spec:
  hosts: [reviews.example.com]
  http:
  - timeout: 5s
    route:
    - destination: {host: reviews.example.com}
`

// Two services of one short name in two namespaces are two services: a
// client in prod calling reviews reaches prod's, one in staging reaches
// staging's, and reviews.staging from prod reaches staging's; two
// DestinationRules for them are both accepted and each route uses its own
// namespace's subset; a VirtualService exported to "." applies to its
// namespace's sidecars only; and an outside host with a mesh service's
// first label (reviews.example.com) gets 502, never the mesh service.
func TestNamespacesRoutedApart(t *testing.T) {
	t.Parallel()
	nm := startNamespacesMesh(t)
	check := func(when string, c *http.Client, from, host string, want nsReply) {
		t.Helper()
		for range 5 {
			if got := nm.call(t, c, host); got != want {
				t.Errorf("%s: %s calling %s: %+v, want %+v", when, from, host, got, want)
				return
			}
		}
	}
	ok := func(svc string) nsReply { return nsReply{status: 200, service: svc} }
	for _, when := range []string{"no resources", "resources applied"} {
		if when == "resources applied" {
			nm.apply(t, nsRules)
		}
		check(when, nm.prodClient, "prod", "reviews", ok("reviews-prod"))
		check(when, nm.prodClient, "prod", "reviews.prod.svc.cluster.local", ok("reviews-prod"))
		check(when, nm.prodClient, "prod", "reviews.staging", ok("reviews-staging"))
		check(when, nm.prodClient, "prod", "reviews.staging.svc.cluster.local", ok("reviews-staging"))
		check(when, nm.stClient, "staging", "reviews.prod", ok("reviews-prod"))
		check(when, nm.prodClient, "prod", "reviews.example.com", nsReply{status: http.StatusBadGateway})
		check(when, nm.stClient, "staging", "reviews.example.com", nsReply{status: http.StatusBadGateway})
		if when == "no resources" {
			check(when, nm.stClient, "staging", "reviews", ok("reviews-staging"))
		} else {
			check(when, nm.stClient, "staging", "reviews", nsReply{status: 418})
		}
	}
	if code := sendRaw(t, nm.prodOut, "GET / HTTP/1.1\r\nHost: reviews.example.com:80\r\n\r\n"); code != http.StatusBadGateway {
		t.Errorf("Host reviews.example.com:80: %d, want 502", code)
	}

	// Listings tell the two apart.
	get := harness.MustRun(t, "sigil", "get", "services", "--admin-socket", adminv1.AdminSocket(nm.m.DataDir))
	for _, want := range []string{`NAMESPACE\s+NAME`, `(?m)^prod\s+reviews\s+1\s`, `(?m)^staging\s+reviews\s+1\s`} {
		if !regexp.MustCompile(want).MatchString(get) {
			t.Errorf("get services lacks %q:\n%s", want, get)
		}
	}
}

// A sidecar whose --namespace contradicts the namespace of its SPIFFE ID
// does not start.
func TestNamespaceFlagDisagreeingWithIDRefused(t *testing.T) {
	t.Parallel()
	m := harness.StartMesh(t)
	m.Entry("n1", "spiffe://"+harness.TrustDomain+"/ns/staging/sa/reviews", "--selector", "unix:uid:"+myUID)
	agent := m.StartAgent("n1")
	_, app := harness.StartApp(t, "reviews")
	dir := filepath.Join(m.Dir, "policy")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(nsPolicy), 0o644)
	p := harness.Start(t, "sigil-proxy", "run", "--socket", agent.Socket, "--service", "reviews", "--app", app, "--policy", dir,
		"--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--namespace", "prod")
	if code := p.Wait(60 * time.Second); code == 0 {
		t.Fatal("sigil-proxy ran with --namespace prod and a staging identity")
	}
	if out := p.Output(); !strings.Contains(out, "spiffe://example.org/ns/staging/sa/reviews is in namespace staging, not prod") {
		t.Errorf("output lacks the reason:\n%s", out)
	}
}
