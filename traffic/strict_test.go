package traffic

import (
	"net/http"
	"strings"
	"testing"
)

// checkParse parses doc: with want nil it must be accepted, otherwise
// refused by an error holding every string of want.
func checkParse(t *testing.T, name, doc string, want []string) {
	t.Helper()
	_, err := Parse([]byte(doc), "f.yaml")
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: refused: %v", name, err)
	case want != nil && err == nil:
		t.Errorf("%s: accepted", name)
	}
	for _, w := range want {
		if err != nil && !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q lacks %q", name, err, w)
		}
	}
}

func vsDoc(spec string) string {
	return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: api\nspec:\n  hosts: [api]\n  http:\n" + spec
}

func drDoc(spec string) string {
	return "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: api\nspec:\n  host: api\n" + spec
}

// Field names are case-sensitive, as in Istio and the Kubernetes API: a
// field that differs from one Sigil has only in case is refused by name,
// never applied. A spec may spell a field by its protobuf name, as
// Istio's protojson reader allows; metadata may not.
func TestStrictFieldNamesCaseSensitive(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string // "" : accepted
	}{
		{"Timeout", vsDoc("  - Timeout: 1s\n    route:\n    - destination: {host: api}\n"), []string{`field "Timeout" is not supported`, `did you mean "timeout"`, "spec.http[0].Timeout"}},
		{"Hosts", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  Hosts: [api]\n  http:\n  - route:\n    - destination: {host: api}\n", []string{`field "Hosts"`, `did you mean "hosts"`}},
		{"perTryTimeOut", vsDoc("  - retries: {attempts: 2, perTryTimeOut: 1s}\n    route:\n    - destination: {host: api}\n"), []string{`field "perTryTimeOut"`, `did you mean "perTryTimeout"`}},
		{"Spec", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\nSpec: {host: api}\n", []string{`field "Spec"`}},
		{"metadata Labels", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api, Labels: {a: b}}\nspec: {host: api}\n", []string{`field "Labels"`, "metadata.Labels"}},
		{"snake_case outside the spec", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api, resource_version: \"1\"}\nspec: {host: api}\n", []string{`field "resource_version"`}},
		{"both spellings", vsDoc("  - retries: {attempts: 2, perTryTimeout: 1s, per_try_timeout: 2s}\n    route:\n    - destination: {host: api}\n"), []string{"same field"}},
		{"per_try_timeout", vsDoc("  - retries: {attempts: 2, per_try_timeout: 1s, retry_on: 5xx}\n    route:\n    - destination: {host: api}\n"), nil},
		{"mirror_percent", vsDoc("  - mirror: {host: api}\n    mirror_percent: 20\n    route:\n    - destination: {host: api}\n"), nil},
		{"DR snake_case", drDoc("  traffic_policy:\n    connection_pool: {http: {http1_max_pending_requests: 1}}\n    outlier_detection: {consecutive_5xx_errors: 3, base_ejection_time: 30s}\n"), nil},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
	// The protobuf spelling is applied, not only accepted.
	rs, err := Parse([]byte(vsDoc("  - retries: {attempts: 2, per_try_timeout: 1500ms}\n    route:\n    - destination: {host: api}\n")), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if d := rs[0].VS.Spec.HTTP[0].Retries.PerTryTimeout; d == nil || d.String() != "1.5s" {
		t.Fatalf("per_try_timeout: %v", d)
	}
	// What a sidecar receives is read by the same rules.
	if _, err := FromSpec(KindVirtualService, "default", "api", []byte(`{"hosts":["api"],"http":[{"Timeout":"1s","route":[{"destination":{"host":"api"}}]}]}`)); err == nil || !strings.Contains(err.Error(), `"Timeout"`) {
		t.Fatalf("FromSpec with Timeout: %v", err)
	}
}

// Standard Kubernetes object fields pass through untouched: what
// `kubectl get -o yaml`, Helm and Argo CD write applies unchanged.
func TestKubernetesObjectFieldsPassThrough(t *testing.T) {
	doc := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api
  namespace: default
  generateName: api-
  selfLink: /apis/networking.istio.io/v1/namespaces/default/destinationrules/api
  uid: 6f1c0d1e-3a1b-4c55-9a55-0b8e2f9a2c11
  resourceVersion: "12345"
  generation: 3
  creationTimestamp: "2026-11-29T10:00:00Z"
  deletionTimestamp: "2026-11-29T11:00:00Z"
  deletionGracePeriodSeconds: 0
  labels: {app.kubernetes.io/managed-by: Helm}
  annotations:
    meta.helm.sh/release-name: api
    kubectl.kubernetes.io/last-applied-configuration: '{"spec":{}}'
    argocd.argoproj.io/sync-wave: "1"
  finalizers: [kubernetes.io/foo]
  ownerReferences:
  - {apiVersion: argoproj.io/v1alpha1, kind: Application, name: api, uid: 1, controller: true}
  managedFields:
  - {manager: kubectl, operation: Apply, apiVersion: networking.istio.io/v1, fieldsType: FieldsV1, fieldsV1: {f:spec: {}}}
spec:
  host: api
status:
  observedGeneration: 3
  conditions: [{type: Reconciled, status: "True"}]
`
	rs, err := Parse([]byte(doc), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := rs[0].Spec()
	if string(spec) != `{"host":"api"}` {
		t.Fatalf("stored spec %s", spec)
	}
}

// Istio's validation rules (pkg/config/validation), each refused naming
// the field.
func TestIstioValidationRules(t *testing.T) {
	route := "    route:\n    - destination: {host: api}\n"
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"attempts 0 with perTryTimeout", vsDoc("  - retries: {attempts: 0, perTryTimeout: 1s}\n" + route), []string{"spec.http[0].retries", "attempts is 0"}},
		{"attempts 0 with retryOn", vsDoc("  - retries: {attempts: 0, retryOn: 5xx}\n" + route), []string{"spec.http[0].retries", "attempts is 0"}},
		{"negative attempts", vsDoc("  - retries: {attempts: -1}\n" + route), []string{"spec.http[0].retries.attempts", "negative"}},
		{"timeout below 1ms", vsDoc("  - timeout: 500us\n" + route), []string{"spec.http[0].timeout", "at least 1ms"}},
		{"timeout 0s", vsDoc("  - timeout: 0s\n" + route), []string{"spec.http[0].timeout", "at least 1ms"}},
		{"timeout finer than 1ms", vsDoc("  - timeout: 1.0005s\n" + route), []string{"spec.http[0].timeout", "whole milliseconds"}},
		{"perTryTimeout finer than 1ms", vsDoc("  - retries: {attempts: 1, perTryTimeout: 1500us}\n" + route), []string{"spec.http[0].retries.perTryTimeout"}},
		{"fixedDelay below 1ms", vsDoc("  - fault: {delay: {fixedDelay: 10ns}}\n" + route), []string{"spec.http[0].fault.delay.fixedDelay"}},
		{"connectTimeout below 1ms", drDoc("  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 1us}}}\n"), []string{"spec.trafficPolicy.connectionPool.tcp.connectTimeout"}},
		{"baseEjectionTime finer than 1ms", drDoc("  trafficPolicy: {outlierDetection: {baseEjectionTime: 30.0001s}}\n"), []string{"spec.trafficPolicy.outlierDetection.baseEjectionTime"}},
		{"redirect and fault", vsDoc("  - redirect: {uri: /b}\n    fault: {abort: {httpStatus: 500}}\n"), []string{"spec.http[0]", "fault and redirect"}},
		{"redirect and rewrite", vsDoc("  - redirect: {uri: /b}\n    rewrite: {uri: /c}\n"), []string{"spec.http[0]", "rewrite and redirect"}},
		{"duplicate hosts", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: [api, reviews, api]\n  http:\n  - route:\n    - destination: {host: api}\n", []string{"spec.hosts[2]", "repeats spec.hosts[0]"}},
		{"empty trafficPolicy", drDoc("  trafficPolicy: {}\n"), []string{"spec.trafficPolicy", "is empty"}},
		{"empty subset trafficPolicy", drDoc("  subsets:\n  - name: v1\n    trafficPolicy: {}\n"), []string{"spec.subsets[0].trafficPolicy", "is empty"}},
		{"empty connectionPool", drDoc("  trafficPolicy: {connectionPool: {}}\n"), []string{"spec.trafficPolicy.connectionPool", "is empty"}},
		{"retryOn with a space", vsDoc("  - retries: {attempts: 2, retryOn: '5xx, reset'}\n" + route), []string{"spec.http[0].retries.retryOn", `" reset" has spaces`}},
		{"retryOn empty entry", vsDoc("  - retries: {attempts: 2, retryOn: '5xx,'}\n" + route), []string{"spec.http[0].retries.retryOn", `"" is not a retry condition`}},
		{"retryOn unknown status", vsDoc("  - retries: {attempts: 2, retryOn: '599'}\n" + route), []string{"spec.http[0].retries.retryOn", `"599"`}},
		{"IPv4 destination", vsDoc("  - route:\n    - destination: {host: 10.0.0.1}\n"), []string{"spec.http[0].route[0].destination.host", "IP address"}},
		{"IPv6 destination", vsDoc("  - route:\n    - destination: {host: '::1'}\n"), []string{"spec.http[0].route[0].destination.host", "IP address"}},
		{"IP mirror", vsDoc("  - mirror: {host: 192.168.1.1}\n" + route), []string{"spec.http[0].mirror.host", "IP address"}},
		{"empty header prefix", vsDoc("  - match:\n    - headers: {x-user: {prefix: ''}}\n" + route), []string{"spec.http[0].match[0].headers.x-user.prefix", "empty prefix"}},
		{"empty method prefix", vsDoc("  - match:\n    - method: {prefix: ''}\n" + route), []string{"spec.http[0].match[0].method.prefix"}},
		{"empty query prefix", vsDoc("  - match:\n    - queryParams: {a: {prefix: ''}}\n" + route), []string{"spec.http[0].match[0].queryParams.a.prefix"}},
		{"metadata.name not a DNS-1123 subdomain", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: API_v1}\nspec: {host: api}\n", []string{"metadata.name", "RFC 1123 subdomain"}},
		{"negative weight", vsDoc("  - route:\n    - destination: {host: api}\n      weight: -1\n"), []string{"spec.http[0].route[0].weight", "negative"}},
		{"all-zero weights", vsDoc("  - route:\n    - destination: {host: api, subset: a}\n      weight: 0\n    - destination: {host: api, subset: b}\n      weight: 0\n"), []string{"spec.http[0].route", "add up to 0"}},
		{"redirect code not 3xx", vsDoc("  - redirect: {uri: /b, redirectCode: 200}\n"), []string{"spec.http[0].redirect.redirectCode", "3xx"}},
		{"authority set twice", vsDoc("  - rewrite: {authority: a.example}\n    headers: {request: {set: {host: b.example}}}\n" + route), []string{"spec.http[0]", "authority is set more than once"}},
		{"host removed", vsDoc("  - headers: {request: {remove: [host]}}\n" + route), []string{"spec.http[0].headers.request.remove"}},
		{"host set on a response", vsDoc("  - headers: {response: {set: {host: a}}}\n" + route), []string{"spec.http[0].headers.response.set"}},
		{"other pseudo-header", vsDoc("  - headers: {request: {set: {':path': /x}}}\n" + route), []string{"spec.http[0].headers.request.set", `":path"`}},
		{"bad authority value", vsDoc("  - headers: {request: {set: {host: 'a b'}}}\n" + route), []string{"spec.http[0].headers.request.set.host"}},
		{"fault percentage too fine", vsDoc("  - fault: {abort: {httpStatus: 500, percentage: {value: 0.00001}}}\n" + route), []string{"spec.http[0].fault.abort.percentage.value"}},
		{"delay percent out of range", vsDoc("  - fault: {delay: {fixedDelay: 1s, percent: 101}}\n" + route), []string{"spec.http[0].fault.delay.percent"}},
		{"mirrorPercent out of range", vsDoc("  - mirror: {host: api}\n    mirrorPercent: 101\n" + route), []string{"spec.http[0].mirrorPercent"}},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
}

// Rules Sigil had and Istio does not: what Istio accepts is accepted.
func TestIstioRulesSigilDropped(t *testing.T) {
	route := "    route:\n    - destination: {host: api}\n"
	tests := []struct{ name, doc string }{
		{"weights need not add up to 100", vsDoc("  - route:\n    - destination: {host: api, subset: a}\n      weight: 1\n    - destination: {host: api, subset: b}\n      weight: 3\n")},
		{"weights above 100", vsDoc("  - route:\n    - destination: {host: api, subset: a}\n      weight: 700\n    - destination: {host: api, subset: b}\n      weight: 300\n")},
		{"single destination, any weight", vsDoc("  - route:\n    - destination: {host: api}\n      weight: 7\n")},
		{"single destination, weight 0", vsDoc("  - route:\n    - destination: {host: api}\n      weight: 0\n")},
		{"one of two at 0", vsDoc("  - route:\n    - destination: {host: api, subset: a}\n      weight: 0\n    - destination: {host: api, subset: b}\n      weight: 5\n")},
		{"attempts above 10", vsDoc("  - retries: {attempts: 25}\n" + route)},
		{"attempts 0 alone", vsDoc("  - retries: {attempts: 0}\n" + route)},
		{"every retryOn Istio lists", vsDoc("  - retries: {attempts: 3, retryOn: '5xx,gateway-error,reset,reset-before-request,connect-failure,retriable-4xx,refused-stream,retriable-status-codes,retriable-headers,envoy-ratelimited,http3-post-connect-failure,cancelled,deadline-exceeded,internal,resource-exhausted,unavailable,503,429'}\n" + route)},
		{"host set", vsDoc("  - headers: {request: {set: {host: api.internal}}}\n" + route)},
		{":authority set on a destination", vsDoc("  - route:\n    - destination: {host: api}\n      headers: {request: {set: {':authority': api.internal:8080}}}\n")},
		{"redirect 300", vsDoc("  - redirect: {uri: /b, redirectCode: 300}\n")},
		{"redirect 305", vsDoc("  - redirect: {uri: /b, redirectCode: 305}\n")},
		{"rewrite.uri without /", vsDoc("  - match:\n    - uri: {prefix: /api/}\n    rewrite: {uri: v1/}\n" + route)},
		{"empty uri prefix", vsDoc("  - match:\n    - uri: {prefix: ''}\n" + route)},
		{"subset without labels", drDoc("  subsets:\n  - name: all\n")},
		{"deprecated fault.delay.percent", vsDoc("  - fault: {delay: {fixedDelay: 5s, percent: 10}}\n" + route)},
		{"deprecated mirrorPercent", vsDoc("  - mirror: {host: api}\n    mirrorPercent: 5\n" + route)},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, nil)
	}
}

// Deprecated fields reach the data plane as their successors, which win
// when both are set (Istio's translation).
func TestDeprecatedFieldsMapToSuccessors(t *testing.T) {
	rs, err := Parse([]byte(vsDoc(`  - fault: {delay: {fixedDelay: 5s, percent: 10}}
    mirror: {host: api}
    mirrorPercent: 5
    route:
    - destination: {host: api}
  - fault: {delay: {fixedDelay: 5s, percent: 10, percentage: {value: 0.5}}}
    mirror: {host: api}
    mirror_percent: 5
    mirrorPercentage: {value: 1.5}
    route:
    - destination: {host: api}
`)), "f.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := rs[0].VS.Spec.HTTP
	if h[0].Fault.Delay.Percentage.Value != 10 || h[0].MirrorPercentage.Value != 5 || h[0].MirrorPercent != nil || h[0].Fault.Delay.Percent != nil {
		t.Fatalf("first route: delay %+v mirror %+v", h[0].Fault.Delay, h[0].MirrorPercentage)
	}
	if h[1].Fault.Delay.Percentage.Value != 0.5 || h[1].MirrorPercentage.Value != 1.5 {
		t.Fatalf("second route: delay %+v mirror %+v", h[1].Fault.Delay, h[1].MirrorPercentage)
	}
	tab := Compile(1, rs)
	rp, _ := tab.routes.lookup("api.default")
	rts := *rp
	if rts[0].DelayPct != 10 || rts[0].MirrorPct != 5 {
		t.Fatalf("compiled: delay %v%% mirror %v%%", rts[0].DelayPct, rts[0].MirrorPct)
	}
	spec, _ := rs[0].Spec()
	if strings.Contains(string(spec), `"percent"`) || strings.Contains(string(spec), "mirrorPercent\"") {
		t.Fatalf("stored spec keeps a deprecated field: %s", spec)
	}
}

// Weights are relative: 1 and 3 split a quarter and three quarters; an
// unset weight beside a set one is 0.
func TestRelativeWeightsPick(t *testing.T) {
	tests := []struct {
		name    string
		route   string
		wantA   float64 // share of subset a, in %
		spreadA float64
	}{
		{"1:3", "    - destination: {host: api, subset: a}\n      weight: 1\n    - destination: {host: api, subset: b}\n      weight: 3\n", 25, 3},
		{"700:300", "    - destination: {host: api, subset: a}\n      weight: 700\n    - destination: {host: api, subset: b}\n      weight: 300\n", 70, 3},
		{"unset is 0", "    - destination: {host: api, subset: a}\n    - destination: {host: api, subset: b}\n      weight: 5\n", 0, 0},
		{"single destination, weight 0", "    - destination: {host: api, subset: a}\n      weight: 0\n", 100, 0},
	}
	for _, tt := range tests {
		rs, err := Parse([]byte(vsDoc("  - route:\n"+tt.route)), "f.yaml")
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		rp, _ := Compile(1, rs).routes.lookup("api.default")
		rt := (*rp)[0]
		a := 0
		const n = 8000
		for range n {
			if rt.Pick().Subset == "a" {
				a++
			}
		}
		if got := float64(a) * 100 / n; got < tt.wantA-tt.spreadA || got > tt.wantA+tt.spreadA {
			t.Errorf("%s: subset a got %.1f%%, want %v%% ± %v", tt.name, got, tt.wantA, tt.spreadA)
		}
	}
}

// Every retryOn value Istio lists means in the sidecar what it means in
// Envoy's router (x-envoy-retry-on, x-envoy-retry-grpc-on).
func TestRetryOnConditions(t *testing.T) {
	type outcome struct {
		kind       int // a Fail* kind, or -1 for a response
		code, grpc int
		header     string
	}
	connect := outcome{kind: FailConnect}
	refused := outcome{kind: FailRefused}
	reset := outcome{kind: FailReset}
	timeout := outcome{kind: FailTimeout}
	status := func(code int) outcome { return outcome{kind: -1, code: code, grpc: -1} }
	grpc := func(c string) outcome { return outcome{kind: -1, code: 200, grpc: GRPCCodes[c]} }
	limited := outcome{kind: -1, code: 429, grpc: -1, header: "X-Envoy-Ratelimited"}
	limited503 := outcome{kind: -1, code: 503, grpc: -1, header: "X-Envoy-Ratelimited"}
	tests := []struct {
		retryOn string
		retry   []outcome
		noRetry []outcome
	}{
		{"reset-before-request", []outcome{connect, refused}, []outcome{reset, timeout, status(503)}},
		{"reset", []outcome{connect, refused, reset, timeout}, []outcome{status(503)}},
		{"envoy-ratelimited", []outcome{limited}, []outcome{status(429), status(503), reset}},
		{"retriable-headers", nil, []outcome{limited, status(503), reset, connect}},
		{"http3-post-connect-failure", nil, []outcome{connect, reset, status(503)}},
		{"retriable-status-codes", []outcome{status(503)}, []outcome{status(502)}},
		{"429,502", []outcome{status(429), status(502)}, []outcome{status(503), status(500)}},
		{"retriable-4xx", []outcome{status(409)}, []outcome{status(400), status(429)}},
		{"deadline-exceeded,resource-exhausted,internal", []outcome{grpc("DEADLINE_EXCEEDED"), grpc("RESOURCE_EXHAUSTED"), grpc("INTERNAL")}, []outcome{grpc("UNAVAILABLE"), grpc("NOT_FOUND")}},
		{"cancelled,unavailable", []outcome{grpc("CANCELLED"), grpc("UNAVAILABLE")}, []outcome{grpc("INTERNAL")}},
		{"gateway-error", []outcome{status(502), status(503), status(504), connect, reset}, []outcome{status(500), limited503}},
		{"5xx", []outcome{status(500), connect, refused, reset, timeout}, []outcome{status(409), limited503}},
		{"5xx,envoy-ratelimited", []outcome{limited503, limited}, nil},
		{"connect-failure", []outcome{connect}, []outcome{reset, timeout, status(503)}},
		{"refused-stream", []outcome{refused, connect}, []outcome{reset}},
	}
	decide := func(r RetryOn, o outcome) bool {
		if o.kind >= 0 {
			return r.Failure(o.kind)
		}
		h := http.Header{}
		if o.header != "" {
			h.Set(o.header, "true")
		}
		return r.Response(o.code, o.grpc, h)
	}
	for _, tt := range tests {
		r, err := ParseRetryOn(tt.retryOn)
		if err != nil {
			t.Fatalf("%s: %v", tt.retryOn, err)
		}
		for _, o := range tt.retry {
			if !decide(r, o) {
				t.Errorf("retryOn %s: %+v not retried", tt.retryOn, o)
			}
		}
		for _, o := range tt.noRetry {
			if decide(r, o) {
				t.Errorf("retryOn %s: %+v retried", tt.retryOn, o)
			}
		}
	}
}
