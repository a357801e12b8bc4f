package proxy

import (
	"log/slog"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Endpoints carry no namespace: each is in its SPIFFE ID's, so a service
// of one namespace never answers for the same name in another.
func TestMeshHostNamesEndpointNamespaces(t *testing.T) {
	self := spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web")
	names, err := meshNames(self, DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	db, _ := naming.ParseEndpoint("10.0.0.9:15006")
	cache, _ := naming.ParseEndpoint("10.0.0.8:15006")
	p := &Proxy{cfg: &checked{upstreams: map[string]*Upstream{
		"db":    {Name: "db", Endpoints: []naming.Endpoint{db}},                                                                           // no ID: the caller's namespace
		"cache": {Name: "cache", Endpoints: []naming.Endpoint{cache}, ID: spiffeid.RequireFromString("spiffe://example.org/ns/ops/sa/c")}, // the ID's
	}}, log: slog.New(slog.DiscardHandler), names: names}
	o := &outbound{p: p, clusters: newClusters(), endpoints: map[string]*endpoint{}}
	o.setState(traffic.Compile(0, nil), 1, 1, []*agentv1.Endpoint{
		{Service: "api", Address: "10.0.0.1:15006", SpiffeId: "spiffe://example.org/ns/default/sa/api"},
		{Service: "api", Address: "10.0.0.2:15006", SpiffeId: "spiffe://example.org/ns/prod/sa/api"},
		{Service: "legacy", Address: "10.0.0.3:15006", SpiffeId: "spiffe://example.org/legacy"},
		{Service: "bad", Address: "10.0.0.4:15006", SpiffeId: "spiffe://example.org/ns/Not_A_Label/sa/x"},
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
	} {
		svc, err := names.Authority(tt.host)
		if err != nil {
			t.Fatalf("%s: %v", tt.host, err)
		}
		var eps []*endpoint
		if c := o.cluster(st, svc, ""); c != nil {
			eps = c.eps
		}
		got := ""
		if len(eps) > 0 {
			got = eps[0].addr
		}
		if got != tt.addr || len(eps) > 1 {
			t.Errorf("%s → %+v: endpoints %d, first %q; want %q", tt.host, svc, len(eps), got, tt.addr)
		}
	}
	if len(st.byService) != 5 || st.byService[naming.Service{Name: "bad", Namespace: naming.DefaultNamespace}] != nil {
		t.Errorf("services %v", st.byService)
	}
}
