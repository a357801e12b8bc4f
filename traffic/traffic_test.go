package traffic

import (
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
)

// Istio's own canary example, unchanged but for the names.
const canary = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
    connectionPool:
      tcp:
        maxConnections: 100
      http:
        http1MaxPendingRequests: 10
        maxRequestsPerConnection: 10
    outlierDetection:
      consecutive5xxErrors: 7
      interval: 5m
      baseEjectionTime: 15m
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
---
# the route
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
      uri:
        prefix: /ratings
    fault:
      abort:
        httpStatus: 503
        percentage:
          value: 50
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 80
    - destination:
        host: reviews
        subset: v2
      weight: 20
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: 5xx,connect-failure,unavailable
    timeout: 10s
    mirror:
      host: reviews
      subset: v2
    mirrorPercentage:
      value: 50.0
`

func TestParseIstioYAML(t *testing.T) {
	rs, err := Parse([]byte(canary), "canary.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].DR == nil || rs[1].VS == nil || rs[1].Ref() != "VirtualService default/reviews" {
		t.Fatalf("%+v", rs)
	}
	if err := CheckReferences(rs); err != nil {
		t.Fatal(err)
	}
	tab := Compile(1, rs)
	r := httptest.NewRequest("GET", "http://reviews/ratings/1", nil)
	r.Header.Set("End-User", "jason")
	m, ok := tab.Match("reviews.default", r, nil)
	if !ok || m.AbortHTTP != 503 || m.AbortPct != 50 || m.PrefixMatched != "/ratings" || m.Dests[0].Subset != "v2" {
		t.Fatalf("jason's route: %+v", m.Route)
	}
	m, ok = tab.Match("reviews.default", httptest.NewRequest("GET", "http://reviews/", nil), nil)
	if !ok || len(m.Dests) != 2 || m.Attempts != 3 || m.Timeout.String() != "10s" || m.MirrorPct != 50 || !m.RetryOn.FiveXX {
		t.Fatalf("default route: %+v", m.Route)
	}
	counts := map[string]int{}
	for i := 0; i < 10000; i++ {
		counts[m.Pick().Subset]++
	}
	if counts["v1"] < 7700 || counts["v1"] > 8300 {
		t.Fatalf("80/20 pick: %v", counts)
	}
	if p := tab.Policy("reviews.default", "v2"); p.LoadBalancer.Simple != "ROUND_ROBIN" || p.ConnectionPool.TCP.MaxConnections != 100 {
		t.Fatalf("v2 policy merge: %+v", p)
	}
	if l, ok := tab.SubsetLabels("reviews.default", "v1"); !ok || l["version"] != "v1" {
		t.Fatal("subset labels")
	}
}

func TestRefusals(t *testing.T) {
	vs := func(spec string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\nspec:\n" + spec
	}
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"unsupported field", vs("  hosts: [api]\n  http:\n  - route:\n    - destination: {host: api}\n    mirrors: [{destination: {host: api}}]\n"), []string{"VirtualService default/api", `field "mirrors" is not supported`}},
		{"tls routes", vs("  hosts: [api]\n  tls:\n  - match: [{sniHosts: [api.example.com]}]\n    route: [{destination: {host: api}}]\n"), []string{"spec.tls[0].match[0].sniHosts[0]", "does not name one of the VirtualService's hosts"}},
		{"weights", vs("  hosts: [api]\n  http:\n  - route:\n    - destination: {host: api, subset: a}\n      weight: 0\n    - destination: {host: api, subset: b}\n"), []string{"spec.http[0].route", "add up to 0"}},
		{"abort status", vs("  hosts: [api]\n  http:\n  - fault: {abort: {httpStatus: 42}}\n    route:\n    - destination: {host: api}\n"), []string{"spec.http[0].fault.abort.httpStatus"}},
		{"bad regex", vs("  hosts: [api]\n  http:\n  - match:\n    - uri: {regex: '('}\n    route:\n    - destination: {host: api}\n"), []string{"spec.http[0].match[0].uri.regex"}},
		{"retryOn", vs("  hosts: [api]\n  http:\n  - retries: {attempts: 2, retryOn: sometimes}\n    route:\n    - destination: {host: api}\n"), []string{"spec.http[0].retries.retryOn", `"sometimes"`}},
		{"duration", vs("  hosts: [api]\n  http:\n  - timeout: soon\n    route:\n    - destination: {host: api}\n"), []string{`duration "soon"`}},
		{"kind", "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n", []string{`kind "Gateway"`}},
		{"version", "apiVersion: v1\nkind: Service\nmetadata: {name: g}\n", []string{`apiVersion "v1"`}},
		{"lb", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: api\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n", []string{"spec.trafficPolicy.loadBalancer.simple"}},
		{"header ops size", vs("  hosts: [api]\n  http:\n  - headers: {request: {set: {x-big: " + strings.Repeat("a", MaxHeaderOpsBytes) + "}}}\n    route:\n    - destination: {host: api}\n"), []string{"spec.http[0].headers.request", "more than 16384"}},
		{"header ops size, add", vs("  hosts: [api]\n  http:\n  - route:\n    - destination: {host: api}\n      headers: {response: {add: {x-a: " + strings.Repeat("a", 9000) + ", x-b: " + strings.Repeat("b", 9000) + "}}}\n"), []string{"spec.http[0].route[0].headers.response", "more than 16384"}},
		{"xfcc", vs("  hosts: [api]\n  http:\n  - headers: {request: {set: {x-forwarded-client-cert: forged}}}\n    route:\n    - destination: {host: api}\n"), []string{"set by the mesh"}},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
	// A subset no DestinationRule defines.
	rs, err := Parse([]byte(vs("  hosts: [api]\n  http:\n  - route:\n    - destination: {host: api, subset: v9}\n")), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckReferences(rs); err != nil {
		t.Fatalf("missing subset refused (Istio accepts it): %v", err)
	}
	if w := UndefinedSubsets(rs); len(w) != 1 || !strings.Contains(w[0].String(), `subset "v9"`) || !strings.Contains(w[0].String(), "503") {
		t.Fatalf("missing subset: warnings %q", w)
	}
}

func TestMatchers(t *testing.T) {
	rs, err := Parse([]byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
  - match:
    - method: {exact: POST}
      queryParams: {debug: {exact: "1"}}
    route: [{destination: {host: api}}]
    headers: {request: {set: {x-route: post-debug}}}
  - match:
    - uri: {regex: "/users/[0-9]+"}
      sourceLabels: {app: web}
    route: [{destination: {host: api}}]
    headers: {request: {set: {x-route: users}}}
  - match:
    - uri: {exact: /Exact}
      ignoreUriCase: true
    route: [{destination: {host: api}}]
    headers: {request: {set: {x-route: exact}}}
`), "m.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tab := Compile(1, rs)
	cases := []struct {
		method, url string
		labels      map[string]string
		want        string
	}{
		{"POST", "http://api/x?debug=1", nil, "post-debug"},
		{"POST", "http://api/x?debug=2", nil, ""},
		{"GET", "http://api/users/42", map[string]string{"app": "web"}, "users"},
		{"GET", "http://api/users/42", map[string]string{"app": "db"}, ""},
		{"GET", "http://api/users/4x", map[string]string{"app": "web"}, ""},
		{"GET", "http://api/exact", nil, "exact"},
	}
	for _, c := range cases {
		m, ok := tab.Match("api.default", httptest.NewRequest(c.method, c.url, nil), c.labels)
		got := ""
		if ok {
			got = m.Headers.Request.Set["x-route"]
		}
		if got != c.want {
			t.Errorf("%s %s %v: route %q, want %q", c.method, c.url, c.labels, got, c.want)
		}
	}
}

func TestRetryOn(t *testing.T) {
	r, err := ParseRetryOn("gateway-error,unavailable,409")
	if err != nil {
		t.Fatal(err)
	}
	if !r.Status(503, -1) || r.Status(500, -1) || !r.Status(409, -1) || !r.Status(200, 14) || r.Status(200, 13) {
		t.Fatalf("%+v", r)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(canary))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n"))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{directResponse: {status: 418, body: {bytes: AAH/}}}]}\n"))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a, trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: u, ttl: 0s}}}, connectionPool: {tcp: {tcpKeepalive: {time: 10s, interval: 1s, probes: 3}}, http: {http2KeepAlive: {interval: 15s, timeout: 5s}}}}}\n"))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{match: [{uri: {prefix: /x}}], delegate: {name: d}}, {route: [{destination: {host: a}}], corsPolicy: {allowOrigins: [{regex: '.*'}], allowMethods: ['*'], maxAge: 1s}}]}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: d}\nspec: {http: [{match: [{uri: {exact: /x}}], route: [{destination: {host: b}}]}]}\n"))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a, trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST, warmup: {duration: 60s, minimumPercent: 5, aggression: 2}}}}\n"))
	f.Add([]byte("apiVersion: security.sigil.dev/v1\nkind: Policy\nmetadata: {name: a, namespace: sigil-system}\nspec: {mode: dryrun, selector: {matchLabels: {app: a}}, modules: {a.rego: 'package sigil.authz', a_test.rego: 'package t'}}\n"))
	f.Add([]byte("apiVersion: security.sigil.dev/v1\nkind: Policy\nmetadata: {name: b}\nspec:\n  bundle: " +
		base64.StdEncoding.EncodeToString(tarGz(f, [][2]string{{"/.manifest", "{}"}, {"/x/a.rego", "package sigil.authz"}})) + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Parse(data, "fuzz")
		if err != nil {
			return
		}
		// A Policy reads back from what is stored and streamed.
		for _, res := range rs {
			if res.Policy != nil {
				spec, err := res.Spec()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := FromSpec(res.Kind, res.Namespace, res.Name, spec); err != nil {
					t.Fatalf("%s does not read back: %v", spec, err)
				}
			}
		}
		// Whatever parses compiles (delegation merged) and can be routed
		// on without panicking.
		tab := Compile(1, SelectedFor(rs, "default", nil))
		r := httptest.NewRequest("GET", "http://a/x?y=1", nil)
		for _, res := range rs {
			if res.VS != nil {
				for _, h := range res.VS.Spec.Hosts {
					key, _, _ := HostKey(h, res.Namespace)
					if m, ok := tab.Match(key, r, nil); ok && len(m.Dests) > 0 {
						m.Pick()
					} else if ok && m.Direct != nil && (m.Direct.Status < 200 || m.Direct.Status > 599 || len(m.Direct.Body) > MaxDirectResponseBody) {
						t.Fatalf("direct response out of bounds: %d, %d bytes", m.Direct.Status, len(m.Direct.Body))
					}
				}
			}
		}
	})
}

func TestMeshHostNamesInResources(t *testing.T) {
	const vs = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: prod}
spec:
  hosts: [%s]
  http: [{route: [{destination: {host: %s}}], mirror: {host: %s}}]
`
	for _, tt := range []struct {
		host, dest, err string
		key             string
		want            WeightedDest
	}{
		{"api", "api", "", "api.prod", WeightedDest{Service: "api", Namespace: "prod"}},
		{"api.prod.svc.cluster.local", "api.other.svc.cluster.local", "", "api.prod", WeightedDest{Service: "api", Namespace: "other"}},
		{"api.prod.svc", "api.other.svc", "", "api.prod", WeightedDest{Service: "api", Namespace: "other"}},
		// Two labels are a host outside the mesh, as Istio reads them.
		{"api", "api.other", "", "api.prod", WeightedDest{Outside: "api.other"}},
		// Outside hosts are kept apart: their own key, never api.prod.
		{"api.github.com", "api", "", "api.github.com", WeightedDest{Service: "api", Namespace: "prod"}},
		{"api", "API.github.com.", "", "api.prod", WeightedDest{Outside: "api.github.com"}},
		{"api", "api..", "spec.http[0].route[0].destination.host", "", WeightedDest{}},
	} {
		rs, err := Parse([]byte(fmt.Sprintf(vs, tt.host, tt.dest, tt.dest)), "t")
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "not a host name") {
				t.Errorf("%s → %s: %v, want an error naming %s", tt.host, tt.dest, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s → %s: %v", tt.host, tt.dest, err)
		}
		tab := Compile(1, rs)
		m, ok := tab.Match(tt.key, httptest.NewRequest("GET", "/", nil), nil)
		if got := m.Route; !ok || got.Dests[0].Service != tt.want.Service || got.Dests[0].Namespace != tt.want.Namespace || got.Dests[0].Outside != tt.want.Outside || got.MirrorTo.Namespace != tt.want.Namespace {
			t.Errorf("%s → %s: %+v %v", tt.host, tt.dest, m.Route, ok)
		}
		for _, other := range []string{"api.default", "api.github", "api.prod"} {
			if other == tt.key {
				continue
			}
			if _, ok := tab.Match(other, httptest.NewRequest("GET", "/", nil), nil); ok {
				t.Errorf("%s: a route for %s matched %s", tt.host, tt.key, other)
			}
		}
	}
}
