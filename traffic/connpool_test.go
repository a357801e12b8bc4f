package traffic

import "testing"

// TestConnectionPoolKeepaliveValidation: tcpKeepalive's durations follow
// Istio's duration rule (at least 1ms, whole milliseconds) and probes is at
// least 1; a valid one is accepted.
func TestConnectionPoolKeepaliveValidation(t *testing.T) {
	ka := func(s string) string {
		return drDoc("  trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: " + s + "}}}\n")
	}
	tests := []struct {
		name, doc string
		want      []string // nil: accepted
	}{
		{"all three", ka("{time: 7200s, interval: 75s, probes: 9}"), nil},
		{"time only", ka("{time: 10s}"), nil},
		{"time below 1ms", ka("{time: 10us}"), []string{"spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time", "at least 1ms"}},
		{"interval finer than 1ms", ka("{interval: 1.0001s}"), []string{"spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval", "whole milliseconds"}},
		{"probes 0", ka("{probes: 0}"), []string{"spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes", "at least 1"}},
		{"probes negative", ka("{probes: -2}"), []string{"spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes"}},
		{"misspelled", ka("{idle: 10s}"), []string{`"idle"`}},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
}

// TestH2KeepAliveValidation: http2KeepAlive's durations follow Istio's
// duration rule; a valid one is accepted.
func TestH2KeepAliveValidation(t *testing.T) {
	ka := func(s string) string {
		return drDoc("  trafficPolicy: {connectionPool: {http: {http2KeepAlive: " + s + "}}}\n")
	}
	tests := []struct {
		name, doc string
		want      []string // nil: accepted
	}{
		{"both", ka("{interval: 15s, timeout: 5s}"), nil},
		{"interval below 1ms", ka("{interval: 0s}"), []string{"spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval", "at least 1ms"}},
		{"timeout finer than 1ms", ka("{timeout: 1.5ms}"), []string{"spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout", "whole milliseconds"}},
		{"misspelled", ka("{Interval: 1s}"), []string{`"Interval"`}},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
}
