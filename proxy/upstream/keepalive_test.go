package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestUpstreamDialKeepalive: a DestinationRule's connectionPool.tcp
// (tcpKeepalive, connectTimeout) becomes the net.Dialer the outbound uses
// toward that destination's sidecars; without one, the default dial.
func TestUpstreamDialKeepalive(t *testing.T) {
	d := func(v time.Duration) *traffic.Duration { return &traffic.Duration{Duration: v} }
	probes := int32(4)
	tcp := func(s *traffic.TCPSettings) *traffic.TrafficPolicy {
		return &traffic.TrafficPolicy{ConnectionPool: &traffic.ConnectionPool{TCP: s}}
	}
	tests := []struct {
		name string
		p    *traffic.TrafficPolicy
		want net.Dialer
	}{
		{"no policy", nil, net.Dialer{Timeout: 5 * time.Second, KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second}}},
		{"all three", tcp(&traffic.TCPSettings{TCPKeepalive: &traffic.TCPKeepalive{Time: d(7200 * time.Second), Interval: d(75 * time.Second), Probes: &probes}}),
			net.Dialer{Timeout: 5 * time.Second, KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 7200 * time.Second, Interval: 75 * time.Second, Count: 4}}},
		{"interval only", tcp(&traffic.TCPSettings{TCPKeepalive: &traffic.TCPKeepalive{Interval: d(time.Second)}}),
			net.Dialer{Timeout: 5 * time.Second, KeepAliveConfig: net.KeepAliveConfig{Enable: true, Interval: time.Second}}},
		{"connectTimeout", tcp(&traffic.TCPSettings{ConnectTimeout: d(30 * time.Millisecond)}),
			net.Dialer{Timeout: 30 * time.Millisecond, KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second}}},
	}
	for _, tt := range tests {
		u := NewConns(prometheus.NewRegistry())
		eps := []*Endpoint{{Addr: "10.0.0.1:15006"}, {Addr: "10.0.0.2:15006"}}
		u.SetDial(eps, DialPolicyOf(tt.p))
		for _, e := range eps {
			l := u.limiter(e.Addr)
			got := *l.dial.dialer()
			if got.Timeout != tt.want.Timeout || got.KeepAliveConfig != tt.want.KeepAliveConfig {
				t.Errorf("%s: %s dials with timeout %v keepalive %+v, want %v %+v", tt.name, e.Addr, got.Timeout, got.KeepAliveConfig, tt.want.Timeout, tt.want.KeepAliveConfig)
			}
		}
	}
}

// noDialer is the Dialer of endpoints whose connections a test never
// opens.
type noDialer struct{}

func (noDialer) DialSidecar(context.Context, *Endpoint, int, string) (net.Conn, error) {
	return nil, errors.New("upstream: no dial in this test")
}

// TestH2KeepAlivePerCluster: a DestinationRule's
// connectionPool.http.http2KeepAlive sets the HTTP/2 PINGs of the
// connections its cluster uses, on connections of their own; a cluster
// without one uses the defaults.
func TestH2KeepAlivePerCluster(t *testing.T) {
	rs, err := traffic.Parse([]byte(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api
spec:
  host: api
  trafficPolicy:
    connectionPool:
      http:
        http2KeepAlive: {interval: 15s, timeout: 5s}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool:
        http:
          http2KeepAlive: {interval: 2s}
  - name: v2
    labels: {version: v1}
    trafficPolicy:
      connectionPool:
        http: {maxRetries: 3}
`), "dr.yaml")
	if err != nil {
		t.Fatal(err)
	}
	table := traffic.Compile(1, rs)
	addr, err := naming.ParseEndpoint("10.0.0.1:15006")
	if err != nil {
		t.Fatal(err)
	}
	ep := NewEndpoint(addr, 0, spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/api"), map[string]string{"version": "v1"}, time.Time{}, noDialer{}, Metrics{})
	for _, tt := range []struct {
		subset            string
		interval, timeout time.Duration
		own               bool // connections apart from the endpoint's own
	}{
		{"", 15 * time.Second, 5 * time.Second, true},
		{"v1", 2 * time.Second, defaultH2PingTimeout, true},
		{"v2", defaultH2PingInterval, defaultH2PingTimeout, false}, // the subset's connectionPool replaces the rule's
	} {
		c := NewCluster("api.default.svc.cluster.local", tt.subset, []*Endpoint{ep}, table.PolicyAt("api.default", tt.subset, 80), nil, nil, nil)
		h2 := c.Conns(ep).newH2()
		if h2.PingInterval != tt.interval || h2.PingTimeout != tt.timeout {
			t.Errorf("subset %q: PING after %v, answer within %v; want %v, %v", tt.subset, h2.PingInterval, h2.PingTimeout, tt.interval, tt.timeout)
		}
		if (c.Conns(ep) != ep.transports) != tt.own {
			t.Errorf("subset %q: connections of its own %v, want %v", tt.subset, c.Conns(ep) != ep.transports, tt.own)
		}
	}
}

// h2UpgradePolicy UPGRADE carries HTTP/1.1 requests between the sidecars
// over HTTP/2; DEFAULT and DO_NOT_UPGRADE keep HTTP/1.1, and a WebSocket
// upgrade always stays on HTTP/1.1.
func TestH2UpgradePolicyPicksTransport(t *testing.T) {
	for _, tc := range []struct {
		policy    string
		websocket bool
		want      int
	}{
		{"no rule", false, ViaH1},
		{"no connectionPool", false, ViaH1},
		{"", false, ViaH1},
		{traffic.H2UpgradeDefault, false, ViaH1},
		{traffic.H2UpgradeDoNotUpgrade, false, ViaH1},
		{traffic.H2UpgradeUpgrade, false, ViaH2},
		{traffic.H2UpgradeUpgrade, true, ViaH1},
		{"", true, ViaH1},
	} {
		p := &traffic.TrafficPolicy{ConnectionPool: &traffic.ConnectionPool{HTTP: &traffic.HTTPSettings{H2UpgradePolicy: tc.policy}}}
		switch tc.policy {
		case "no rule":
			p = nil
		case "no connectionPool":
			p = &traffic.TrafficPolicy{}
		}
		c := &Cluster{upgradeH2: upgradeH2Of(p)}
		r := httptest.NewRequest(http.MethodGet, "http://api/", nil)
		if tc.websocket {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}
		if got := c.KindOf(r); got != tc.want {
			t.Errorf("policy %q, websocket %v: kind %d, want %d", tc.policy, tc.websocket, got, tc.want)
		}
	}
}

// sniDialer records the sni of the dials it is asked for, and makes none.
type sniDialer struct{ sni chan string }

func (d sniDialer) DialSidecar(_ context.Context, _ *Endpoint, _ int, sni string) (net.Conn, error) {
	d.sni <- sni
	return nil, errors.New("upstream: no dial in this test")
}

// TestConnsDialWithClusterSNI: the connections a cluster uses to an
// endpoint dial with the cluster's ISTIO_MUTUAL tls.sni, each kind of
// them; a cluster without one dials with none.
func TestConnsDialWithClusterSNI(t *testing.T) {
	addr, err := naming.ParseEndpoint("10.0.0.1:15006")
	if err != nil {
		t.Fatal(err)
	}
	d := sniDialer{sni: make(chan string, 1)}
	ep := NewEndpoint(addr, 0, spiffeid.ID{}, nil, time.Time{}, d, Metrics{})
	for _, sni := range []string{"api.example", ""} {
		p := &traffic.TrafficPolicy{TLS: &traffic.ClientTLSSettings{Mode: traffic.TLSIstioMutual, SNI: sni}}
		tr := NewCluster("api", "", []*Endpoint{ep}, p, nil, nil, nil).Conns(ep)
		for kind, dial := range map[string]func() error{
			"http/1.1": func() error { _, err := tr.dial(context.Background()); return err },
			"h2":       func() error { _, err := tr.newH2().Dialer.DialContext(context.Background()); return err },
			"upgrade": func() error {
				_, err := tr.make().DialTLSContext(context.Background(), "tcp", addr.String())
				return err
			},
		} {
			if dial() == nil {
				t.Fatalf("%s: the test's dialer dialled", kind)
			}
			if got := <-d.sni; got != sni {
				t.Errorf("%s with sni %q: dialled with %q", kind, sni, got)
			}
		}
	}
}
