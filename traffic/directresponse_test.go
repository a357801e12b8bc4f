package traffic

import (
	"strings"
	"testing"
)

// TestDirectResponseRules: Istio's rules for directResponse, each refusal
// naming its field.
func TestDirectResponseRules(t *testing.T) {
	vs := func(route string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: [api]\n  http:\n  - " + route + "\n"
	}
	big := strings.Repeat("x", MaxDirectResponseBody+1)
	tests := []struct{ name, doc, want string }{
		{"status only", vs("directResponse: {status: 503}"), ""},
		{"string body", vs("directResponse: {status: 200, body: {string: ok}}"), ""},
		{"bytes body", vs("directResponse: {status: 200, body: {bytes: aGVsbG8=}}"), ""},
		{"url-safe unpadded bytes", vs("directResponse: {status: 200, body: {bytes: _-8}}"), ""},
		{"body at the bound", vs("directResponse: {status: 200, body: {string: " + big[1:] + "}}"), ""},
		{"no status", vs("directResponse: {body: {string: ok}}"), "spec.http[0].directResponse.status"},
		{"status 199", vs("directResponse: {status: 199}"), "spec.http[0].directResponse.status"},
		{"status 600", vs("directResponse: {status: 600}"), "spec.http[0].directResponse.status"},
		{"with route", vs("directResponse: {status: 200}\n    route: [{destination: {host: api}}]"), "directResponse and route"},
		{"with redirect", vs("directResponse: {status: 200}\n    redirect: {uri: /x}"), "directResponse and redirect"},
		{"with rewrite", vs("directResponse: {status: 200}\n    rewrite: {uri: /x}"), "directResponse and rewrite"},
		{"with fault", vs("directResponse: {status: 200}\n    fault: {abort: {httpStatus: 500, percentage: {value: 1}}}"), "directResponse and fault"},
		{"both bodies", vs("directResponse: {status: 200, body: {string: a, bytes: YQ==}}"), "spec.http[0].directResponse.body"},
		{"empty body", vs("directResponse: {status: 200, body: {}}"), "spec.http[0].directResponse.body"},
		{"too big", vs("directResponse: {status: 200, body: {string: " + big + "}}"), "spec.http[0].directResponse.body"},
		{"bad base64", vs("directResponse: {status: 200, body: {bytes: '!!'}}"), "base64"},
		{"unknown field", vs("directResponse: {status: 200, code: 1}"), `field "code"`},
		{"nothing to do", vs("match: [{uri: {prefix: /}}]"), "needs route, redirect or directResponse"},
	}
	for _, tt := range tests {
		checkRefusal(t, tt.name, tt.doc, tt.want)
	}
}
