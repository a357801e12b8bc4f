# The demo's authorization policy: web may GET from api; nothing else is
# allowed (the proxy denies by default, and on any policy error).
package sigil.authz

default allow := false

allow if {
	input.source.principal == "spiffe://example.org/ns/demo/sa/web"
	input.destination.service == "api"
	input.request.method == "GET"
}
