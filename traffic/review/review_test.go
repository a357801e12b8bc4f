package review

import (
	"bytes"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/traffic"
)

func parse(t *testing.T, yaml string) []traffic.Resource {
	t.Helper()
	if yaml == "" {
		return nil
	}
	rs, err := traffic.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

const dr = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

func vs(http string) string {
	return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: [api]\n  http:\n" + http
}

const split90 = `  - route:
    - destination: {host: api, subset: v1}
      weight: 90
    - destination: {host: api, subset: v2}
      weight: 10
`

// Every kind of change that alters what goes on the wire is found, with
// the route it is on and, for faults and mirrors, the percentage; what
// does not change the wire (a retry, a timeout) is not listed.
func TestReviewFindsWireChanges(t *testing.T) {
	for _, tc := range []struct {
		name, old, new string
		want           []string // "kind|route|what|percent"
	}{
		{"weight shift", dr + "---\n" + vs("  - route:\n    - destination: {host: api, subset: v1}\n"), dr + "---\n" + vs(split90),
			[]string{"weights|http[0]|weights: api/v1 100 → 90, api/v2 none → 10|100"}},
		{"header removed and set, per destination too", vs("  - route:\n    - destination: {host: api}\n      headers: {request: {set: {x-env: staging}}}\n"),
			vs("  - headers:\n      request: {remove: [X-Debug]}\n      response: {set: {cache-control: no-store}}\n    route:\n    - destination: {host: api}\n      headers: {request: {set: {x-env: prod}}}\n"),
			[]string{
				"headers|http[0]|request header x-debug removed|100",
				`headers|http[0]|response header cache-control set to "no-store"|100`,
				`headers|http[0]|to api: request header x-env set to "prod" (was "staging")|100`,
			}},
		{"header no longer removed", vs("  - headers: {request: {remove: [x-debug]}}\n    route:\n    - destination: {host: api}\n"), vs("  - route:\n    - destination: {host: api}\n"),
			[]string{"headers|http[0]|request header x-debug no longer removed|100"}},
		{"path rewrites", vs("  - name: v1api\n    match: [{uri: {prefix: /v1}}]\n    route:\n    - destination: {host: api}\n  - route:\n    - destination: {host: api}\n"),
			vs("  - name: v1api\n    match: [{uri: {prefix: /v1}}]\n    rewrite: {uri: /v2}\n    route:\n    - destination: {host: api}\n  - rewrite:\n      uriRegexRewrite: {match: ^/old/(.*), rewrite: /new/\\1}\n    route:\n    - destination: {host: api}\n"),
			[]string{`rewrite|http[0] v1api|rewrite: matched path prefix rewritten to "/v2"|100`, `rewrite|http[1]|rewrite: path matching "^/old/(.*)" rewritten to "/new/\\1"|100`}},
		{"faults with percentages", vs("  - route:\n    - destination: {host: api}\n"),
			vs("  - fault:\n      delay: {fixedDelay: 2s, percentage: {value: 5}}\n      abort: {httpStatus: 503, percentage: {value: 12.5}}\n    route:\n    - destination: {host: api}\n"),
			[]string{"fault|http[0]|fault: delay 2s for 5 % of requests|5", "fault|http[0]|fault: abort with HTTP 503 for 12.5 % of requests|12.5"}},
		{"fault removed", vs("  - fault: {abort: {httpStatus: 500, percentage: {value: 1}}}\n    route:\n    - destination: {host: api}\n"), vs("  - route:\n    - destination: {host: api}\n"),
			[]string{"fault|http[0]|fault removed (was: abort with HTTP 500 for 1 % of requests)|1"}},
		{"mirror", vs("  - route:\n    - destination: {host: api}\n"), vs("  - mirror: {host: shadow}\n    mirrorPercentage: {value: 20}\n    route:\n    - destination: {host: api}\n"),
			[]string{"mirror|http[0]|mirror: copy 20 % of requests to shadow|20"}},
		{"redirect and direct response", vs("  - name: a\n    match: [{uri: {exact: /a}}]\n    route:\n    - destination: {host: api}\n  - route:\n    - destination: {host: api}\n"),
			vs("  - name: a\n    match: [{uri: {exact: /a}}]\n    redirect: {uri: /b}\n  - directResponse: {status: 503, body: {string: down}}\n"),
			[]string{`redirect|http[0] a|redirect: answer 301 redirecting to uri "/b"|100`, `directResponse|http[1]|direct response: answer 503 at the sidecar with body "down", never reaching the app|100`}},
		{"route removed by name", vs("  - name: canary\n    match: [{headers: {x-canary: {exact: \"1\"}}}]\n    route:\n    - destination: {host: api}\n  - route:\n    - destination: {host: api}\n"),
			vs("  - route:\n    - destination: {host: api}\n"),
			[]string{"route removed|http[0] canary|route removed: its requests fall to the next route that matches (or the default route)|100"}},
		{"resources and subsets removed", dr + "---\n" + vs(split90), strings.Replace(dr, "  - {name: v2, labels: {version: v2}}\n", "", 1),
			[]string{"subset removed||subset v2 removed: routes to it answer 503|100",
				"removed||VirtualService removed: its 1 HTTP routes no longer apply; requests to api take the default route (every endpoint, no subsets)|100"}},
		{"subset labels changed", dr, strings.Replace(dr, "{name: v2, labels: {version: v2}}", "{name: v2, labels: {version: v3, track: canary}}", 1),
			[]string{"subset labels||subset v2 selects the endpoints labelled {track=canary, version=v3} (was {version=v2}): its traffic moves to them|100"}},
		{"tcp weights", vs("  - route:\n    - destination: {host: api}\n  tcp:\n  - route:\n    - destination: {host: api, subset: v1}\n"),
			vs("  - route:\n    - destination: {host: api}\n  tcp:\n  - route:\n    - {destination: {host: api, subset: v1}, weight: 50}\n    - {destination: {host: api, subset: v2}, weight: 50}\n"),
			[]string{"weights|tcp[0]|weights: api/v1 100 → 50, api/v2 none → 50|100"}},
		{"delegate takes its root's service", dr + "---\n" + vs("  - name: versions\n    match: [{uri: {prefix: /v}}]\n    delegate: {name: api-versions}\n  - route: [{destination: {host: api, subset: v1}}]\n") +
			"---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api-versions}\nspec:\n  http:\n  - route: [{destination: {host: api, subset: v1}}]\n",
			dr + "---\n" + vs("  - name: versions\n    match: [{uri: {prefix: /v}}]\n    delegate: {name: api-versions}\n  - route: [{destination: {host: api, subset: v1}}]\n") +
				"---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api-versions}\nspec:\n  http:\n  - fault: {abort: {httpStatus: 503}}\n    route: [{destination: {host: api, subset: v1}}]\n",
			[]string{"fault|http[0]|fault: abort with HTTP 503 for 100 % of requests|100"}},
		{"retries and timeouts are not wire rewrites", vs("  - route:\n    - destination: {host: api}\n"), vs("  - timeout: 3s\n    retries: {attempts: 1}\n    route:\n    - destination: {host: api}\n"), nil},
		{"new VirtualService to one destination moves nothing", "", vs("  - route:\n    - destination: {host: api}\n"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range Diff(parse(t, tc.old), parse(t, tc.new)) {
				got = append(got, c.Kind+"|"+c.Route+"|"+c.What+"|"+fmtPct(c.Percent)[:len(fmtPct(c.Percent))-2])
				if len(c.Services) != 1 || c.Services[0] != (Service{"default", "api"}) {
					t.Errorf("%s: services %v", c.What, c.Services)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// The share of traffic comes from the stats rows only: a route's own row,
// the whole service for its only route, the subset's row; without rows
// it says there are no live traffic data.
func TestReviewTrafficShares(t *testing.T) {
	api := Service{"default", "api"}
	routes := adminv1.StatResponse{Window: time.Minute, Rows: []adminv1.StatRow{
		{Kind: adminv1.StatRoute, Namespace: "default", Name: "api", Route: "canary", Golden: adminv1.Golden{Requests: 25}},
		{Kind: adminv1.StatRoute, Namespace: "default", Name: "api", Route: "", Golden: adminv1.Golden{Requests: 75}},
	}}
	subsets := adminv1.StatResponse{Window: time.Minute, Rows: []adminv1.StatRow{
		{Kind: adminv1.StatSubset, Namespace: "default", Name: "api", Subset: "v1", Golden: adminv1.Golden{Requests: 90, TCPConnections: 7}},
		{Kind: adminv1.StatSubset, Namespace: "default", Name: "api", Subset: "v2", Golden: adminv1.Golden{Requests: 10}},
	}}
	f := NewFigures(routes, subsets)
	for _, tc := range []struct {
		name string
		f    *Figures
		c    Change
		want string
	}{
		{"named route", f, Change{Services: []Service{api}, RouteName: "canary", Percent: 100}, "25.0 % (25 of 100 requests to api.default in the last 1m0s)"},
		{"fault share", f, Change{Services: []Service{api}, RouteName: "canary", Percent: 10}, "25.0 % (25 of 100 requests to api.default in the last 1m0s); applies to 10 % of them, about 2.5 % of the service's"},
		{"whole service with subsets", f, Change{Services: []Service{api}, WholeService: true, Kind: KindWeights, Percent: 100,
			Weights: []WeightChange{{Destination: "api/v1", Service: api, Subset: "v1"}, {Destination: "api/v2", Service: api, Subset: "v2"}}},
			"100.0 % (100 of 100 requests to api.default in the last 1m0s); requests per subset now: api/v1 90, api/v2 10"},
		{"subset removed", f, Change{Services: []Service{api}, Kind: KindSubsetRemoved, Subset: "v2", Percent: 100}, "10.0 % (10 of 100 requests to api.default in the last 1m0s)"},
		{"unnamed route among others", f, Change{Services: []Service{api}, Percent: 100}, "not measured on its own (an unnamed route; name it to measure it): api.default had 100 requests in the last 1m0s"},
		{"no traffic to it", f, Change{Services: []Service{{"default", "db"}}, WholeService: true, Percent: 100}, "no live traffic data (no requests to db.default in the last 1m0s)"},
		{"tcp route", f, Change{Services: []Service{api}, WholeService: true, Connections: true, Kind: KindWeights, Percent: 100,
			Weights: []WeightChange{{Destination: "api/v1", Service: api, Subset: "v1"}}},
			"100.0 % (7 of 7 TCP connections to api.default in the last 1m0s); TCP connections per subset now: api/v1 7"},
		{"tcp route among others", f, Change{Services: []Service{api}, Route: "tcp[1]", Connections: true, Percent: 100}, "not measured on its own (one of several tcp routes): api.default had 7 TCP connections in the last 1m0s"},
		{"subset relabelled", f, Change{Services: []Service{api}, Kind: KindSubsetLabels, Subset: "v1", Percent: 100}, "90.0 % (90 of 100 requests to api.default in the last 1m0s)"},
		{"no figures", NoFigures("server unreachable"), Change{Services: []Service{api}, WholeService: true}, "no live traffic data (server unreachable)"},
	} {
		if got := tc.f.Touched(tc.c); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
	var b bytes.Buffer
	changes := Diff(parse(t, dr+"---\n"+vs("  - route:\n    - destination: {host: api, subset: v1}\n")), parse(t, dr+"---\n"+vs("  - headers: {request: {remove: [x-debug|x]}}\n    route:\n    - destination: {host: api, subset: v1}\n      weight: 90\n    - destination: {host: api, subset: v2}\n      weight: 10\n")))
	if err := Markdown(&b, changes, f); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| Resource | Route | Change | Traffic it would touch |",
		"| VirtualService default/api | `http[0]` | weights: api/v1 100 → 90, api/v2 none → 10 | 100.0 % (100 of 100 requests to api.default in the last 1m0s); requests per subset now: api/v1 90, api/v2 10 |",
		`| VirtualService default/api | ` + "`http[0]`" + ` | request header x-debug\|x removed |`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
}

// A Policy resource, applied or removed, is no traffic change: the
// review leaves it out (it once dereferenced a DestinationRule it did not
// have and panicked).
func TestReviewLeavesPoliciesOut(t *testing.T) {
	pol := parse(t, "apiVersion: security.sigil.dev/v1\nkind: Policy\nmetadata: {name: authz}\nspec:\n  modules: {a.rego: 'package sigil.authz'}\n")
	if got := Diff(pol, nil); len(got) != 0 {
		t.Fatalf("removing a Policy: %+v", got)
	}
	if got := Diff(nil, pol); len(got) != 0 {
		t.Fatalf("adding a Policy: %+v", got)
	}
}
