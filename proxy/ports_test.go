package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/proxy/upstream"
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
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, routedDest{naming.Service{Name: "api", Namespace: "prod"}, 9443, ""}))
	if svc, port, err := o.destOf(r); err != nil || port != 9443 || svc.Name != "api" {
		t.Errorf("transparent: %v %d %v; want api, the original destination's port 9443", svc, port, err)
	}
}

// Each port with portLevelSettings is a cluster of its own; any other
// port shares the port-less one (an app cannot grow clusters by port).
func TestPortLevelClusters(t *testing.T) {
	o := outboundWith(t, `apiVersion: networking.istio.io/v1
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
`, &agentv1.Endpoint{Service: "api", Address: "10.0.0.1:15006", SpiffeId: "spiffe://example.org/ns/default/sa/api"})
	st := o.state.Load()
	api := naming.Service{Name: "api", Namespace: "default"}
	c80, c9080, c1 := o.clusterAt(st, api, "", 80), o.clusterAt(st, api, "", 9080), o.clusterAt(st, api, "", 1)
	if c80.Balancer() != "RANDOM" || c80.Pool.Limit() != 0 {
		t.Errorf("port 80: lb %s, pool limit %d; want the rule's RANDOM, no limit", c80.Balancer(), c80.Pool.Limit())
	}
	if c9080.Balancer() != "ROUND_ROBIN" || c9080.Pool.Limit() != 3 {
		t.Errorf("port 9080: lb %s, pool %d; want ROUND_ROBIN, 3", c9080.Balancer(), c9080.Pool.Limit())
	}
	if c80 != c1 || c80 == c9080 || c80.Pool == c9080.Pool {
		t.Error("want one cluster for ports without settings, another (and another pool) for 9080")
	}
}

// TestMeshMTLSSNI: a DestinationRule's ISTIO_MUTUAL tls.sni (at the rule's,
// a subset's or a port's level, merged as Istio does) is the server name of
// the mesh mTLS ClientHello to that cluster's sidecars; clusters without
// one send none, over connections of their own.
func TestMeshMTLSSNI(t *testing.T) {
	o := outboundWith(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api
spec:
  host: api
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, sni: api.top.example}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9080}
        tls: {mode: ISTIO_MUTUAL, sni: v1-9080.example}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      tls: {mode: ISTIO_MUTUAL}
`, &agentv1.Endpoint{Service: "api", Address: "10.0.0.1:15006", SpiffeId: "spiffe://example.org/ns/default/sa/api", Labels: map[string]string{"version": "v1"}},
		&agentv1.Endpoint{Service: "api", Address: "10.0.0.2:15006", SpiffeId: "spiffe://example.org/ns/default/sa/api", Labels: map[string]string{"version": "v2"}})
	st := o.state.Load()
	api := naming.Service{Name: "api", Namespace: "default"}
	for _, tt := range []struct {
		subset string
		port   uint32
		want   string
	}{
		{"", 80, "api.top.example"},
		{"v1", 80, "api.top.example"},
		{"v1", 9080, "v1-9080.example"},
		{"v2", 80, ""}, // the subset's tls replaces the rule's, sni and all
	} {
		c := o.clusterAt(st, api, tt.subset, tt.port)
		if c == nil || c.SNI != tt.want {
			t.Errorf("%s port %d: cluster %+v, want sni %q", tt.subset, tt.port, c, tt.want)
			continue
		}
		ep := c.Eps[0]
		// The cluster's SNI is what its connections dial with
		// (upstream's TestConnsDialWithClusterSNI); the outbound's
		// DialSidecar sends it.
		cfg := o.p.id.clientTLS(ep.ID, alpnH2, c.SNI)
		if got := sentSNI(t, cfg); got != tt.want || cfg.ServerName != tt.want {
			t.Errorf("%s port %d: ClientHello server name %q (config %q), want %q", tt.subset, tt.port, got, cfg.ServerName, tt.want)
		}
		own := upstream.NewCluster("", "", nil, nil, nil, nil, nil).Conns(ep) // no sni, no pings: the endpoint's own
		if (c.Conns(ep) == own) != (tt.want == "") {
			t.Errorf("%s port %d: connections shared with clusters of another sni", tt.subset, tt.port)
		}
	}
}

// sentSNI is the server name a handshake with cfg sends, as a server sees
// it in the ClientHello (the handshake is then refused: no certificates).
func sentSNI(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	got := make(chan string, 1)
	srv, cli := net.Pipe()
	defer cli.Close()
	go func() {
		defer srv.Close()
		tls.Server(srv, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			got <- h.ServerName
			return nil, errors.New("enough")
		}}).Handshake()
	}()
	tls.Client(cli, cfg).Handshake()
	return <-got
}

// outboundWith is an outbound side whose mesh state is the resources of
// yaml and eps, with an identity that has no SVID (handshakes go as far
// as the ClientHello).
func outboundWith(t *testing.T, yaml string, eps ...*agentv1.Endpoint) *outbound {
	t.Helper()
	rs, err := traffic.Parse([]byte(yaml), "dr.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: &checked{}, log: slog.New(slog.DiscardHandler), id: &identity{}}
	o := testOutbound(p)
	o.setState(traffic.Compile(1, rs), 1, 1, eps)
	return o
}
