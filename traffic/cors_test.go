package traffic

import "testing"

// TestCORSPolicyValidation: Istio's rules for corsPolicy, and what Istio
// would accept and ignore refused by name.
func TestCORSPolicyValidation(t *testing.T) {
	cors := func(s string) string {
		return vsDoc("  - route: [{destination: {host: api}}]\n    corsPolicy: " + s + "\n")
	}
	tests := []struct {
		name, doc string
		want      []string // nil: accepted
	}{
		{"reference example", cors("{allowOrigins: [{exact: https://example.com}], allowMethods: [POST, GET], allowCredentials: false, allowHeaders: [X-Foo-Bar], maxAge: 24h}"), nil},
		{"every field", cors("{allowOrigins: [{prefix: https://app.}, {regex: 'https://.*\\.example\\.com'}], allowMethods: ['*'], allowHeaders: ['*'], exposeHeaders: [X-Id], maxAge: 10s, allowCredentials: true, unmatchedPreflights: IGNORE}"), nil},
		{"deprecated allowOrigin", cors("{allowOrigin: ['*']}"), nil},
		{"forward", cors("{allowOrigins: [{exact: https://a.com}], unmatchedPreflights: FORWARD}"), nil},
		{"protobuf names", cors("{allow_origins: [{exact: https://a.com}], allow_credentials: true, max_age: 1s}"), nil},
		{"no origin kind", cors("{allowOrigins: [{}]}"), []string{"spec.http[0].corsPolicy.allowOrigins[0]", "exactly one"}},
		{"empty exact origin", cors("{allowOrigins: [{exact: ''}]}"), []string{"spec.http[0].corsPolicy.allowOrigins[0]", "empty match"}},
		{"bad regex", cors("{allowOrigins: [{regex: '('}]}"), []string{"spec.http[0].corsPolicy.allowOrigins[0].regex"}},
		{"both origin forms", cors("{allowOrigins: [{exact: https://a.com}], allowOrigin: [https://b.com]}"), []string{"spec.http[0].corsPolicy.allowOrigin", "beside allowOrigins"}},
		{"lower-case method", cors("{allowMethods: [get]}"), []string{"spec.http[0].corsPolicy.allowMethods[0]", "not a supported HTTP method"}},
		{"unknown method", cors("{allowMethods: [FETCH]}"), []string{"allowMethods[0]", "FETCH"}},
		{"bad allow header", cors("{allowHeaders: ['x foo']}"), []string{"spec.http[0].corsPolicy.allowHeaders[0]", "not a header name"}},
		{"empty expose header", cors("{exposeHeaders: ['']}"), []string{"spec.http[0].corsPolicy.exposeHeaders[0]"}},
		{"maxAge below 1ms", cors("{maxAge: 0s}"), []string{"spec.http[0].corsPolicy.maxAge", "at least 1ms"}},
		{"maxAge not whole seconds", cors("{maxAge: 1500ms}"), []string{"spec.http[0].corsPolicy.maxAge", "whole seconds"}},
		{"unmatchedPreflights", cors("{unmatchedPreflights: DROP}"), []string{"spec.http[0].corsPolicy.unmatchedPreflights", "FORWARD or IGNORE"}},
		{"misspelled", cors("{allowOrigins: [{exact: https://a.com}], allowCredential: true}"), []string{`"allowCredential"`}},
		{"on a redirect", vsDoc("  - redirect: {uri: /new}\n    corsPolicy: {allowOrigin: ['*']}\n"), []string{"spec.http[0].corsPolicy", "redirect"}},
		{"on a directResponse", vsDoc("  - directResponse: {status: 200}\n    corsPolicy: {allowOrigin: ['*']}\n"), []string{"spec.http[0].corsPolicy", "directResponse"}},
	}
	for _, tt := range tests {
		checkParse(t, tt.name, tt.doc, tt.want)
	}
}

// TestCORSPolicyOriginMatch: an origin is allowed when an entry matches it
// whole (exact and prefix case-sensitive, regex anchored) or matches "*".
func TestCORSPolicyOriginMatch(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, tt := range []struct {
		name   string
		policy CorsPolicy
		origin string
		want   bool
	}{
		{"exact", CorsPolicy{AllowOrigins: []StringMatch{{Exact: s("https://a.com")}}}, "https://a.com", true},
		{"exact, other case", CorsPolicy{AllowOrigins: []StringMatch{{Exact: s("https://a.com")}}}, "https://A.com", false},
		{"exact, longer", CorsPolicy{AllowOrigins: []StringMatch{{Exact: s("https://a.com")}}}, "https://a.com.evil", false},
		{"prefix", CorsPolicy{AllowOrigins: []StringMatch{{Prefix: s("https://a.")}}}, "https://a.b.c", true},
		{"regex anchored", CorsPolicy{AllowOrigins: []StringMatch{{Regex: s(`https://\w+\.a\.com`)}}}, "https://x.a.com.evil.net", false},
		{"regex", CorsPolicy{AllowOrigins: []StringMatch{{Regex: s(`https://\w+\.a\.com`)}}}, "https://x.a.com", true},
		{"regex .* allows all", CorsPolicy{AllowOrigins: []StringMatch{{Regex: s(`.*`)}}}, "null", true},
		{"exact * allows all", CorsPolicy{AllowOrigins: []StringMatch{{Exact: s("*")}}}, "https://z.org", true},
		{"deprecated exact", CorsPolicy{AllowOrigin: []string{"https://a.com"}}, "https://a.com", true},
		{"deprecated *", CorsPolicy{AllowOrigin: []string{"*"}}, "https://z.org", true},
		{"none", CorsPolicy{AllowMethods: []string{"GET"}}, "https://a.com", false},
	} {
		if got := compileCORS(&tt.policy).OriginAllowed(tt.origin); got != tt.want {
			t.Errorf("%s: %s allowed %v, want %v", tt.name, tt.origin, got, tt.want)
		}
	}
}
