package proxy

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/traffic"
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
		u := newUpstreamConns(prometheus.NewRegistry())
		eps := []*endpoint{{addr: "10.0.0.1:15006"}, {addr: "10.0.0.2:15006"}}
		u.setDial(eps, upstreamDialOf(tt.p))
		for _, e := range eps {
			l := u.limiter(e.addr)
			got := *l.dial.dialer()
			if got.Timeout != tt.want.Timeout || got.KeepAliveConfig != tt.want.KeepAliveConfig {
				t.Errorf("%s: %s dials with timeout %v keepalive %+v, want %v %+v", tt.name, e.addr, got.Timeout, got.KeepAliveConfig, tt.want.Timeout, tt.want.KeepAliveConfig)
			}
		}
	}
}

// TestH2KeepAlivePerCluster: a DestinationRule's
// connectionPool.http.http2KeepAlive sets the HTTP/2 PINGs (net/http's
// SendPingTimeout, PingTimeout) of the transports its cluster uses, on
// connections of their own; a cluster without one uses the defaults.
func TestH2KeepAlivePerCluster(t *testing.T) {
	o := outboundWith(t, `apiVersion: networking.istio.io/v1
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
`, &agentv1.Endpoint{Service: "api", Address: "10.0.0.1:15006", SpiffeId: "spiffe://example.org/ns/default/sa/api", Labels: map[string]string{"version": "v1"}})
	st := o.state.Load()
	api := naming.Service{Name: "api", Namespace: "default"}
	for _, tt := range []struct {
		subset            string
		interval, timeout time.Duration
		own               bool // connections apart from the endpoint's own
	}{
		{"", 15 * time.Second, 5 * time.Second, true},
		{"v1", 2 * time.Second, defaultH2PingTimeout, true},
		{"v2", defaultH2PingInterval, defaultH2PingTimeout, false}, // the subset's connectionPool replaces the rule's
	} {
		c := o.clusterAt(st, api, tt.subset, 80)
		if c == nil {
			t.Fatalf("subset %q: no cluster", tt.subset)
		}
		ep := c.eps[0]
		h2 := c.conns(ep).make(alpnH2).HTTP2
		if h2.SendPingTimeout != tt.interval || h2.PingTimeout != tt.timeout {
			t.Errorf("subset %q: PING after %v, answer within %v; want %v, %v", tt.subset, h2.SendPingTimeout, h2.PingTimeout, tt.interval, tt.timeout)
		}
		if (c.conns(ep) != ep.transports) != tt.own {
			t.Errorf("subset %q: connections of its own %v, want %v", tt.subset, c.conns(ep) != ep.transports, tt.own)
		}
	}
}

// HTTP/1.1 requests travel between the sidecars over HTTP/2 unless
// h2UpgradePolicy is DO_NOT_UPGRADE (no rule, no connectionPool, unset,
// DEFAULT and UPGRADE all upgrade); a WebSocket upgrade always stays on
// HTTP/1.1.
func TestH2UpgradePolicyPicksTransport(t *testing.T) {
	for _, tc := range []struct {
		policy    string
		websocket bool
		want      int
	}{
		{"no rule", false, viaH2},
		{"no connectionPool", false, viaH2},
		{"", false, viaH2},
		{traffic.H2UpgradeDefault, false, viaH2},
		{traffic.H2UpgradeDoNotUpgrade, false, viaH1},
		{traffic.H2UpgradeUpgrade, false, viaH2},
		{traffic.H2UpgradeUpgrade, true, viaH1},
		{"", true, viaH1},
	} {
		p := &traffic.TrafficPolicy{ConnectionPool: &traffic.ConnectionPool{HTTP: &traffic.HTTPSettings{H2UpgradePolicy: tc.policy}}}
		switch tc.policy {
		case "no rule":
			p = nil
		case "no connectionPool":
			p = &traffic.TrafficPolicy{}
		}
		c := &cluster{upgradeH2: upgradeH2Of(p)}
		r := httptest.NewRequest(http.MethodGet, "http://api/", nil)
		if tc.websocket {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}
		if got := c.kindOf(r); got != tc.want {
			t.Errorf("policy %q, websocket %v: kind %d, want %d", tc.policy, tc.websocket, got, tc.want)
		}
	}
}
