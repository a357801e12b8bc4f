package proxy

import (
	"net/http"

	"github.com/sigil-mesh/sigil/traffic"
	"golang.org/x/net/http/httpguts"
)

// CORS header names (https://fetch.spec.whatwg.org/#http-cors-protocol).
const (
	hdrOrigin                 = "Origin"
	hdrRequestMethod          = "Access-Control-Request-Method"
	hdrRequestHeaders         = "Access-Control-Request-Headers"
	hdrAllowOrigin            = "Access-Control-Allow-Origin"
	hdrAllowCredentials       = "Access-Control-Allow-Credentials"
	hdrAllowMethods           = "Access-Control-Allow-Methods"
	hdrAllowHeaders           = "Access-Control-Allow-Headers"
	hdrExposeHeaders          = "Access-Control-Expose-Headers"
	hdrMaxAge                 = "Access-Control-Max-Age"
	corsWildcard              = "*"
	corsCredentialsTrueString = "true"
)

// corsOrigin is the request's Origin when the route's corsPolicy allows it
// and it can be echoed in a response header, "" otherwise (no policy, no
// Origin, or an origin not allowed: the response then carries no CORS
// headers and the browser blocks it). Read before the route's header
// operations, as Envoy's CORS filter reads it before the router's.
func corsOrigin(r *http.Request, c *traffic.CORS) string {
	if c == nil {
		return ""
	}
	o := r.Header.Get(hdrOrigin)
	if o == "" || !httpguts.ValidHeaderFieldValue(o) || !c.OriginAllowed(o) {
		return ""
	}
	return o
}

// corsPreflight answers a CORS preflight (OPTIONS with an Origin and an
// Access-Control-Request-Method) at the sidecar, as Envoy's CORS filter
// does: 200 with the route's policy, Access-Control-Allow-Origin only
// for an allowed origin (allowed is corsOrigin's answer). A preflight of
// an origin not allowed is left to the destination (false) when the
// policy forwards unmatched preflights (FORWARD, the default). It reports
// whether it answered.
func corsPreflight(w http.ResponseWriter, r *http.Request, c *traffic.CORS, allowed string) bool {
	if c == nil || r.Method != http.MethodOptions || r.Header.Get(hdrOrigin) == "" || r.Header.Get(hdrRequestMethod) == "" {
		return false
	}
	if allowed == "" && c.ForwardUnmatched {
		return false
	}
	h := w.Header()
	if allowed != "" {
		h.Set(hdrAllowOrigin, allowed)
	}
	if c.AllowCredentials {
		h.Set(hdrAllowCredentials, corsCredentialsTrueString)
	}
	echo := func(name, policy, requested string) {
		if policy == corsWildcard {
			policy = r.Header.Get(requested)
			if !httpguts.ValidHeaderFieldValue(policy) {
				policy = ""
			}
		}
		if policy != "" {
			h.Set(name, policy)
		}
	}
	echo(hdrAllowMethods, c.AllowMethods, hdrRequestMethod)
	echo(hdrAllowHeaders, c.AllowHeaders, hdrRequestHeaders)
	if c.MaxAge != "" {
		h.Set(hdrMaxAge, c.MaxAge)
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
	return true
}

// corsMark adds to a response's headers what an allowed origin's actual
// request gets (Envoy's CORS filter on the response): the origin,
// credentials and the exposed headers, replacing any the destination
// sent. allowed is corsOrigin's answer; "" adds nothing.
func corsMark(h http.Header, c *traffic.CORS, allowed string) {
	if allowed == "" {
		return
	}
	h.Set(hdrAllowOrigin, allowed)
	if c.AllowCredentials {
		h.Set(hdrAllowCredentials, corsCredentialsTrueString)
	}
	if c.ExposeHeaders != "" {
		h.Set(hdrExposeHeaders, c.ExposeHeaders)
	}
}
