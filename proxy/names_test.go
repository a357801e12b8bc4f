package proxy

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/proxy/upstream"
	"github.com/sigil-mesh/sigil/telemetry"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Endpoints live in their SPIFFE ID's namespace, so a service of one
// namespace never answers for the same name in another; the namespace an
// endpoint registered counts only for an ID without one, and one that
// contradicts its ID is ignored.
func TestMeshHostNamesEndpointNamespaces(t *testing.T) {
	self := spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web")
	names, err := meshNames(self, "", DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	db, _ := naming.ParseEndpoint("10.0.0.9:15006")
	cache, _ := naming.ParseEndpoint("10.0.0.8:15006")
	p := &Proxy{cfg: &checked{upstreams: map[string]*Upstream{
		"db":    {Name: "db", Endpoints: []naming.Endpoint{db}},                                                                           // no ID: the caller's namespace
		"cache": {Name: "cache", Endpoints: []naming.Endpoint{cache}, ID: spiffeid.RequireFromString("spiffe://example.org/ns/ops/sa/c")}, // the ID's
	}}, log: slog.New(slog.DiscardHandler), names: names}
	o := testOutbound(p)
	o.setState(traffic.Compile(0, nil), 1, 1, []*agentv1.Endpoint{
		{Service: "api", Address: "10.0.0.1:15006", SpiffeId: "spiffe://example.org/ns/default/sa/api"},
		{Service: "api", Address: "10.0.0.2:15006", SpiffeId: "spiffe://example.org/ns/prod/sa/api"},
		{Service: "legacy", Address: "10.0.0.3:15006", SpiffeId: "spiffe://example.org/legacy"},
		{Service: "bad", Address: "10.0.0.4:15006", SpiffeId: "spiffe://example.org/ns/Not_A_Label/sa/x"},
		{Service: "plain", Address: "10.0.0.5:15006", SpiffeId: "spiffe://example.org/plain", Namespace: "prod"},
		{Service: "api", Address: "10.0.0.6:15006", SpiffeId: "spiffe://example.org/ns/staging/sa/api", Namespace: "prod"},
		{Service: "odd", Address: "10.0.0.7:15006", SpiffeId: "spiffe://example.org/odd", Namespace: "Not_A_Label"},
	})
	st := o.state.Load()
	for _, tt := range []struct {
		host string
		addr string // "" for no endpoint
	}{
		{"api", "10.0.0.2:15006"},
		{"api.prod", "10.0.0.2:15006"},
		{"api.default.svc.cluster.local", "10.0.0.1:15006"},
		{"api.other", ""},
		{"legacy.default", "10.0.0.3:15006"},
		{"legacy", ""},
		{"db", "10.0.0.9:15006"},
		{"db.default", ""},
		{"cache.ops", "10.0.0.8:15006"},
		{"cache", ""},
		{"bad.not-a-label", ""},
		{"plain", "10.0.0.5:15006"},
		{"plain.default", ""},
		{"api.staging", ""},
		{"odd", ""},
		{"odd.default", ""},
	} {
		svc, err := names.Authority(tt.host)
		if err != nil {
			t.Fatalf("%s: %v", tt.host, err)
		}
		var eps []*upstream.Endpoint
		if c := o.cluster(st, svc, ""); c != nil {
			eps = c.Eps
		}
		got := ""
		if len(eps) > 0 {
			got = eps[0].Addr
		}
		if got != tt.addr || len(eps) > 1 {
			t.Errorf("%s → %+v: endpoints %d, first %q; want %q", tt.host, svc, len(eps), got, tt.addr)
		}
	}
	if len(st.byService) != 6 || st.byService[naming.Service{Name: "bad", Namespace: naming.DefaultNamespace}] != nil {
		t.Errorf("services %v", st.byService)
	}
}

// --namespace names the workload's namespace for an ID without one, and
// is refused when it contradicts an ID of the form /ns/<ns>/sa/<sa>.
func TestMeshHostNamesNamespaceFlag(t *testing.T) {
	for _, tt := range []struct {
		id, flag, want, err string
	}{
		{"spiffe://example.org/ns/prod/sa/web", "", "prod", ""},
		{"spiffe://example.org/ns/prod/sa/web", "prod", "prod", ""},
		{"spiffe://example.org/ns/prod/sa/web", "staging", "", "proxy: --namespace: naming: namespace disagrees with the workload's identity: spiffe://example.org/ns/prod/sa/web is in namespace prod, not staging"},
		{"spiffe://example.org/web", "", "default", ""},
		{"spiffe://example.org/web", "staging", "staging", ""},
		{"spiffe://example.org/web", "Bad_NS", "", "RFC 1123 label"},
	} {
		r, err := meshNames(spiffeid.RequireFromString(tt.id), tt.flag, DefaultClusterDomain)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s --namespace %q: err %v, want %q", tt.id, tt.flag, err, tt.err)
		case tt.err == "" && (err != nil || r.Namespace() != tt.want):
			t.Errorf("%s --namespace %q: %q %v, want %q", tt.id, tt.flag, r.Namespace(), err, tt.want)
		}
	}
	if _, err := (Config{Namespace: "a.b"}).Validate(); err == nil || !strings.Contains(err.Error(), `--namespace "a.b" must be a lowercase RFC 1123 label`) {
		t.Errorf("Validate: %v", err)
	}
}

// exportTo is honoured: a sidecar compiles only what is exported to its
// namespace, while references are still checked across all of them.
func TestExportToAppliesPerNamespace(t *testing.T) {
	vs := func(ns, to string) *agentv1.Resource {
		spec := `{"hosts":["reviews.prod.svc.cluster.local"],"http":[{"route":[{"destination":{"host":"reviews.prod.svc.cluster.local"}}]}],"exportTo":["` + to + `"]}`
		return &agentv1.Resource{Kind: traffic.KindVirtualService, Namespace: ns, Name: "reviews", Spec: []byte(spec)}
	}
	for _, tt := range []struct {
		self      string
		resources []*agentv1.Resource
		want      bool
	}{
		{"spiffe://example.org/ns/prod/sa/web", []*agentv1.Resource{vs("prod", ".")}, true},
		{"spiffe://example.org/ns/staging/sa/web", []*agentv1.Resource{vs("prod", ".")}, false},
		{"spiffe://example.org/ns/staging/sa/web", []*agentv1.Resource{vs("prod", "*")}, true},
		{"spiffe://example.org/ns/staging/sa/web", []*agentv1.Resource{vs("prod", "staging")}, true},
		{"spiffe://example.org/ns/dev/sa/web", []*agentv1.Resource{vs("prod", "staging")}, false},
	} {
		names, err := meshNames(spiffeid.RequireFromString(tt.self), "", DefaultClusterDomain)
		if err != nil {
			t.Fatal(err)
		}
		p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler), names: names, metrics: newMetrics(func() float64 { return 0 }, telemetry.NewRecorder(time.Now()))}
		o := testOutbound(p)
		o.setState(traffic.Compile(0, nil), 0, 0, nil)
		if v := p.applyConfig(o, &agentv1.Config{Version: 2, Resources: tt.resources}); v != 2 {
			t.Fatalf("version %d: the configuration was refused", v)
		}
		if got := o.state.Load().table.HasRoutes("reviews.prod"); got != tt.want {
			t.Errorf("%s, exportTo %s: routes %v, want %v", tt.self, tt.resources[0].Spec, got, tt.want)
		}
	}
}

// TestWorkloadSelectorUsesSidecarLabels: a sidecar compiles the
// DestinationRule whose workloadSelector its --labels match (in place of
// the host's rule without one), and only in the rule's own namespace.
func TestWorkloadSelectorUsesSidecarLabels(t *testing.T) {
	dr := func(name, sel, lb string) *agentv1.Resource {
		spec := `{"host":"reviews","trafficPolicy":{"loadBalancer":{"simple":"` + lb + `"}}` + sel + `}`
		return &agentv1.Resource{Kind: traffic.KindDestinationRule, Namespace: "prod", Name: name, Spec: []byte(spec)}
	}
	resources := []*agentv1.Resource{dr("all", "", "RANDOM"), dr("web", `,"workloadSelector":{"matchLabels":{"app":"web"}}`, "LEAST_REQUEST")}
	for _, tt := range []struct {
		self   string
		labels map[string]string
		want   string
	}{
		{"spiffe://example.org/ns/prod/sa/web", map[string]string{"app": "web"}, "LEAST_REQUEST"},
		{"spiffe://example.org/ns/prod/sa/web", map[string]string{"app": "db"}, "RANDOM"},
		{"spiffe://example.org/ns/prod/sa/web", nil, "RANDOM"},
		{"spiffe://example.org/ns/staging/sa/web", map[string]string{"app": "web"}, "RANDOM"},
	} {
		names, err := meshNames(spiffeid.RequireFromString(tt.self), "", DefaultClusterDomain)
		if err != nil {
			t.Fatal(err)
		}
		p := &Proxy{cfg: &checked{labels: tt.labels}, log: slog.New(slog.DiscardHandler), names: names, metrics: newMetrics(func() float64 { return 0 }, telemetry.NewRecorder(time.Now()))}
		o := testOutbound(p)
		o.setState(traffic.Compile(0, nil), 0, 0, nil)
		if v := p.applyConfig(o, &agentv1.Config{Version: 2, Resources: resources}); v != 2 {
			t.Fatalf("version %d: the configuration was refused", v)
		}
		pol := o.state.Load().table.Policy("reviews.prod", "")
		if pol == nil || pol.LoadBalancer == nil || pol.LoadBalancer.Simple != tt.want {
			t.Errorf("%s %v: policy %+v, want loadBalancer %s", tt.self, tt.labels, pol, tt.want)
		}
	}
}

// TestSubsetWithoutLabelsTakesEveryEndpoint: a DestinationRule subset
// without labels (Istio accepts it) is every endpoint of the host; one
// with labels, those that carry them.
func TestSubsetWithoutLabelsTakesEveryEndpoint(t *testing.T) {
	self := spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web")
	names, err := meshNames(self, "", DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := traffic.Parse([]byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api, namespace: prod}\nspec:\n  host: api\n  subsets:\n  - name: all\n  - name: v1\n    labels: {version: v1}\n"), "dr.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler), names: names}
	o := testOutbound(p)
	o.setState(traffic.Compile(1, rs), 1, 1, []*agentv1.Endpoint{
		{Service: "api", Address: "10.0.0.1:15006", SpiffeId: "spiffe://example.org/ns/prod/sa/api", Labels: map[string]string{"version": "v1"}},
		{Service: "api", Address: "10.0.0.2:15006", SpiffeId: "spiffe://example.org/ns/prod/sa/api", Labels: map[string]string{"version": "v2"}},
		{Service: "api", Address: "10.0.0.3:15006", SpiffeId: "spiffe://example.org/ns/prod/sa/api"},
	})
	st := o.state.Load()
	api := naming.Service{Name: "api", Namespace: "prod"}
	for subset, want := range map[string]int{"all": 3, "v1": 1} {
		c := o.cluster(st, api, subset)
		if c == nil || len(c.Eps) != want {
			t.Errorf("subset %s: cluster %v, want %d endpoints", subset, c, want)
		}
	}
}
