package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
)

// backend is one instance of the api service: its app and its sidecar.
type backend struct {
	name, version string
	appArgs       []string
	app           *harness.Proc
	addr          string
	proxy         *harness.ProxyProc
}

// trafficMesh is web calling api, whose instances register themselves
// through their agent (no --upstream anywhere): discovery at work.
type trafficMesh struct {
	ids      identities
	web      *harness.ProxyProc
	backends map[string]*backend
	client   *http.Client
}

func startTrafficMesh(t *testing.T, backends ...*backend) *trafficMesh {
	t.Helper()
	return startTrafficMeshWeb(t, nil, backends...)
}

// startTrafficMeshWeb is startTrafficMesh with more flags for web's
// sidecar.
func startTrafficMeshWeb(t *testing.T, webFlags []string, backends ...*backend) *trafficMesh {
	t.Helper()
	ids := startIdentities(t)
	tm := &trafficMesh{ids: ids, backends: map[string]*backend{}}
	for _, b := range backends {
		tm.addBackend(t, b)
	}
	_, webApp := harness.StartApp(t, "web")
	tm.web = harness.StartProxy(t, ids.web, "web", webApp, ids.policyDir, append([]string{"--label", "app=web"}, webFlags...)...)
	proxyURL, _ := url.Parse("http://" + tm.web.Outbound)
	tm.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxIdleConnsPerHost: 64}}
	names := make([]string, 0, len(backends))
	for _, b := range backends {
		names = append(names, b.name)
	}
	tm.waitBackends(t, names...)
	return tm
}

func (tm *trafficMesh) addBackend(t *testing.T, b *backend) {
	t.Helper()
	b.app, b.addr = harness.StartApp(t, b.name, b.appArgs...)
	b.proxy = harness.StartProxy(t, tm.ids.api, "api", b.addr, tm.ids.policyDir, "--label", "version="+b.version)
	tm.backends[b.name] = b
}

type result struct {
	status  int
	service string
	took    time.Duration
	header  http.Header
	err     error
}

// get sends one GET to api through web's sidecar.
func (tm *trafficMesh) get(path string, headers map[string]string) result {
	req, _ := http.NewRequest("GET", "http://api"+path, nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := tm.client.Do(req)
	if err != nil {
		return result{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r appReply
	if json.Unmarshal(body, &r) != nil {
		// The demo app's errors start with its name.
		r.Service, _, _ = strings.Cut(string(body), " ")
	}
	return result{status: resp.StatusCode, service: r.Service, took: time.Since(start), header: resp.Header}
}

// load sends n requests from c workers and returns them all.
func (tm *trafficMesh) load(n, c int, path string, headers map[string]string) []result {
	out := make([]result, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				out[i] = tm.get(path, headers)
			}
		}()
	}
	wg.Wait()
	return out
}

// waitBackends sends requests until each named backend has answered:
// web's sidecar has learned their endpoints.
func (tm *trafficMesh) waitBackends(t *testing.T, names ...string) {
	t.Helper()
	seen := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range tm.load(20, 4, "/", nil) {
			if r.err == nil && r.service != "" {
				seen[r.service] = true
			}
		}
		all := true
		for _, n := range names {
			all = all && seen[n]
		}
		if all {
			return
		}
	}
	t.Fatalf("backends %v not all reachable; saw %v", names, seen)
}

func (tm *trafficMesh) admin() *adminv1.AdminClient {
	return adminv1.NewAdminClient(adminv1.AdminSocket(tm.ids.m.DataDir))
}

// apply runs the real `sigil apply -f` and waits until every sidecar
// runs the new version.
func (tm *trafficMesh) apply(t *testing.T, yaml string, extra ...string) string {
	t.Helper()
	path := filepath.Join(tm.ids.m.Dir, "apply-"+time.Now().Format("150405.000000000")+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out := harness.MustRun(t, "sigil", append([]string{"apply", "-f", path, "--admin-socket", adminv1.AdminSocket(tm.ids.m.DataDir)}, extra...)...)
	tm.waitSynced(t)
	return out
}

// waitSynced waits until no sidecar is stale.
func (tm *trafficMesh) waitSynced(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps, err := tm.admin().ListProxies(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		stale := 0
		for _, p := range ps {
			if p.Stale {
				stale++
			}
		}
		if stale == 0 && len(ps) >= len(tm.backends)+1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecars still stale: %+v", ps)
		}
		time.Sleep(20 * time.Millisecond) // polling the server's own view; there is no push to wait on from outside
	}
}

func count(rs []result) (byService map[string]int, failed int) {
	byService = map[string]int{}
	for _, r := range rs {
		if r.err != nil || r.status != 200 {
			failed++
			continue
		}
		byService[r.service]++
	}
	return byService, failed
}

const subsetsDR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api
spec:
  host: api
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
`

func splitVS(v1, v2 int) string {
	return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [api]
  http:
  - route:
    - destination: {host: api, subset: v1}
      weight: ` + itoa(v1) + `
    - destination: {host: api, subset: v2}
      weight: ` + itoa(v2) + `
`
}

func itoa(n int) string { return strconvItoa(n) }
