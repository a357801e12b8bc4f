// Package protocol names how a request came to a sidecar: the values of the
// policy input's request.protocol, the protocol label of the request
// metrics and the protocol field of a decision record. It is a leaf
// package so that the proxy's shared helpers (proxy/hop, proxy/upstream)
// can name a protocol without importing the policy engine.
package protocol

// The protocols a sidecar tells apart.
const (
	// HTTP is an HTTP/1.x or HTTP/2 request that is not gRPC.
	HTTP = "http"
	// GRPC is an HTTP/2 request whose Content-Type is application/grpc
	// (with or without a +proto or +json suffix).
	GRPC = "grpc"
	// TCP is an opaque connection, decided once when it opens.
	TCP = "tcp"
)
