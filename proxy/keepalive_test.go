package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
