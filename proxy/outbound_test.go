package proxy

import "github.com/sigil-mesh/sigil/proxy/upstream"

// testOutbound is an outbound side of p for tests that drive its routing
// without a running sidecar: an empty cluster cache and no endpoints
// (setState brings them). Tests set what else they need (clock, mirrors).
func testOutbound(p *Proxy) *outbound {
	return &outbound{p: p, clusters: upstream.NewClusters(), endpoints: map[string]*upstream.Endpoint{}}
}
