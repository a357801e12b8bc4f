// Package hop holds what both sides of the sidecar do to a request or a
// response as it crosses a hop, whichever side it is on: the hop-by-hop
// headers (RFC 9110 §7.6.1) a Connection header may and may not remove,
// the identity header only the sidecar sets (XFCC), the protocol a request
// speaks (ProtocolOf: gRPC or HTTP) and the gRPC rules that follow from it
// (grpc-timeout deadlines, the status of the sidecar's own failures,
// trailers-only answers), the copy of a response or a tunnel from one
// connection to the other, and the answer the sidecar gives when it fails
// a request itself (WriteError).
//
// Package proxy's inbound side (from other sidecars to the app) and its
// outbound side (from the app to other sidecars) both call it; it knows
// nothing of either, of routing, or of the mesh.
package hop
