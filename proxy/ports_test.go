package proxy

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The port a request is for: the transparent route's (the original
// destination's), else the authority's, else 80.
func TestRequestPortOfAuthority(t *testing.T) {
	names, err := meshNames(spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web"), "", DefaultClusterDomain)
	if err != nil {
		t.Fatal(err)
	}
	o := &outbound{p: &Proxy{names: names}}
	for _, tt := range []struct {
		method, target, host string
		want                 uint16
	}{
		{"GET", "http://api/x", "", 80},
		{"GET", "http://api:9080/x", "", 9080},
		{"GET", "http://api.prod.svc.cluster.local:8080/x", "other:1", 8080}, // absolute form wins over Host
		{"GET", "/x", "api:7070", 7070},
		{"GET", "/x", "api", 80},
		{"CONNECT", "api:5432", "api:5432", 5432},
	} {
		r := httptest.NewRequest(tt.method, tt.target, nil)
		if tt.host != "" {
			r.Host = tt.host
		}
		_, port, err := o.destOf(r)
		if err != nil || port != tt.want {
			t.Errorf("%s %s (Host %q): port %d, %v; want %d", tt.method, tt.target, tt.host, port, err, tt.want)
		}
	}
	r := httptest.NewRequest("GET", "/x", nil)
	r.Host = "api:1234"
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, routedDest{naming.Service{Name: "api", Namespace: "prod"}, 9443}))
	if svc, port, err := o.destOf(r); err != nil || port != 9443 || svc.Name != "api" {
		t.Errorf("transparent: %v %d %v; want api, the original destination's port 9443", svc, port, err)
	}
}

// Each port with portLevelSettings is a cluster of its own; any other
// port shares the port-less one (an app cannot grow clusters by port).
func TestPortLevelClusters(t *testing.T) {
	rs, err := traffic.Parse([]byte(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api
spec:
  host: api
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: ROUND_ROBIN}
      connectionPool: {http: {http2MaxRequests: 3}}
`), "dr.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler)}
	o := &outbound{p: p, clusters: newClusters(), endpoints: map[string]*endpoint{}}
	o.setState(traffic.Compile(1, rs), 1, 1, []*agentv1.Endpoint{{Service: "api", Address: "10.0.0.1:15006", SpiffeId: "spiffe://example.org/ns/default/sa/api"}})
	st := o.state.Load()
	api := naming.Service{Name: "api", Namespace: "default"}
	c80, c9080, c1 := o.clusterAt(st, api, "", 80), o.clusterAt(st, api, "", 9080), o.clusterAt(st, api, "", 1)
	if c80.lb != lbRandom || c80.pool.slots != nil {
		t.Errorf("port 80: lb %s, pool limited %v; want the rule's RANDOM, no limit", c80.lb, c80.pool.slots != nil)
	}
	if c9080.lb != lbRoundRobin || cap(c9080.pool.slots) != 3 {
		t.Errorf("port 9080: lb %s, pool %d; want ROUND_ROBIN, 3", c9080.lb, cap(c9080.pool.slots))
	}
	if c80 != c1 || c80 == c9080 || c80.pool == c9080.pool {
		t.Error("want one cluster for ports without settings, another (and another pool) for 9080")
	}
}
