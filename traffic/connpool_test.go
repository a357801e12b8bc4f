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

// TestConsistentHashValidation: consistentHash has exactly one key, no
// simple beside it, valid names, a cookie ttl of 0 or more, at most one of
// ringHash and maglev; Istio's examples are accepted.
func TestConsistentHashValidation(t *testing.T) {
	ch := func(s string) string {
		return drDoc("  trafficPolicy: {loadBalancer: " + s + "}\n")
	}
	p := "spec.trafficPolicy.loadBalancer.consistentHash"
	tests := []struct {
		name, doc string
		want      []string // nil: accepted
	}{
		{"header", ch("{consistentHash: {httpHeaderName: x-user}}"), nil},
		{"cookie, session", ch("{consistentHash: {httpCookie: {name: user, ttl: 0s}}}"), nil},
		{"cookie, ttl and path", ch("{consistentHash: {httpCookie: {name: user, path: /, ttl: 60s}}}"), nil},
		{"cookie without ttl", ch("{consistentHash: {httpCookie: {name: user}}}"), nil},
		{"source ip with ring size", ch("{consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 1024}}}"), nil},
		{"query with maglev", ch("{consistentHash: {httpQueryParameterName: u, maglev: {tableSize: 65537}}}"), nil},
		{"deprecated minimumRingSize", ch("{consistentHash: {httpHeaderName: x-user, minimumRingSize: 1024}}"), nil},
		{"beside simple", ch("{simple: ROUND_ROBIN, consistentHash: {httpHeaderName: x-user}}"), []string{p, "beside simple"}},
		{"no key", ch("{consistentHash: {ringHash: {minimumRingSize: 8}}}"), []string{p, "sets 0 keys"}},
		{"two keys", ch("{consistentHash: {httpHeaderName: x-user, useSourceIp: true}}"), []string{p, "sets 2 keys"}},
		{"bad header name", ch("{consistentHash: {httpHeaderName: 'x user'}}"), []string{p + ".httpHeaderName"}},
		{"bad query name", ch("{consistentHash: {httpQueryParameterName: 'a=b'}}"), []string{p + ".httpQueryParameterName"}},
		{"cookie without name", ch("{consistentHash: {httpCookie: {ttl: 1s}}}"), []string{p + ".httpCookie.name"}},
		{"cookie ttl finer than 1ms", ch("{consistentHash: {httpCookie: {name: u, ttl: 1.0001s}}}"), []string{p + ".httpCookie.ttl"}},
		{"cookie ttl negative", ch("{consistentHash: {httpCookie: {name: u, ttl: -1s}}}"), []string{p + ".httpCookie.ttl"}},
		{"ringHash and maglev", ch("{consistentHash: {useSourceIp: true, ringHash: {}, maglev: {}}}"), []string{p, "ringHash and maglev"}},
		{"misspelled", ch("{consistentHash: {httpHeader: x}}"), []string{`"httpHeader"`}},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
}
