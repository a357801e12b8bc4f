package pathnorm

import (
	"net/url"
	"strings"
)

// ParseQuery splits a raw query that Target accepted into names and their
// values, in order: pairs are separated by "&" only (";" is part of a
// value, as in Go since 1.17 and the WHATWG URL standard), "+" is a space
// and escapes are decoded (application/x-www-form-urlencoded). This is the
// shape of OPA-Envoy's parsed_query: name -> list of values. A pair
// without "=" has the value "". It returns nil for an empty query.
func ParseQuery(q string) map[string][]string {
	if q == "" {
		return nil
	}
	// No size hint from the separators: "a&a&a..." is one name, and a map
	// sized for every pair would cost a hundred times the query.
	m := map[string][]string{}
	for q != "" {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key := unescape(k)
		m[key] = append(m[key], unescape(v))
	}
	return m
}

// unescape decodes form encoding; a malformed escape (which Target
// refuses) is kept literally.
func unescape(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}
