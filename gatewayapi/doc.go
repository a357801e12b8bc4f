// Package gatewayapi reads Gateway API routes (gateway.networking.k8s.io
// v1 HTTPRoute and GRPCRoute) attached to a Service — the GAMMA mesh
// profile — and turns them into the Istio VirtualService documents Sigil
// already enforces, as Istio does internally, together with the
// status.parents[] each route's Service parents get.
//
// A route is read strictly (Decoder): a field Sigil does not enforce is
// refused by name, never ignored. Translate merges every route attached
// to one Service into one VirtualService per namespace the routes live
// in: the Service's own namespace (a producer route, for every caller)
// or another one (a consumer route, exportTo ".": for the callers of
// that namespace only, which then take it instead of the producer's).
// Within it the rules are in Gateway API's precedence order (exact path,
// longest prefix, method, most headers, most query parameters; then the
// oldest route, then namespace/name), each match an http route of its
// own, and every document goes through traffic.FromSpec, the validation
// a hand-written VirtualService gets.
//
//	rs, err := gatewayapi.Parse(yamlBytes, "route.yaml")
//	vss, statuses := gatewayapi.Translate(rs)
package gatewayapi
