package traffic

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// CorsPolicy is Istio's HTTPRoute corsPolicy (Envoy's CORS filter, per
// route): the calling sidecar answers a preflight that matches the route
// itself and marks the responses of allowed origins
// (https://fetch.spec.whatwg.org/#http-cors-protocol).
type CorsPolicy struct {
	// AllowOrigins are the origins allowed, each an exact, prefix or regex
	// match of the Origin header; one that matches "*" allows every origin.
	AllowOrigins []StringMatch `json:"allowOrigins,omitempty"`
	// AllowOrigin is Istio's deprecated form: exact origins.
	AllowOrigin []string `json:"allowOrigin,omitempty"`
	// AllowMethods is Access-Control-Allow-Methods; "*" echoes the
	// preflight's Access-Control-Request-Method.
	AllowMethods []string `json:"allowMethods,omitempty"`
	// AllowHeaders is Access-Control-Allow-Headers; "*" echoes the
	// preflight's Access-Control-Request-Headers.
	AllowHeaders []string `json:"allowHeaders,omitempty"`
	// ExposeHeaders is Access-Control-Expose-Headers on actual responses.
	ExposeHeaders []string `json:"exposeHeaders,omitempty"`
	// MaxAge is Access-Control-Max-Age, in whole seconds.
	MaxAge *Duration `json:"maxAge,omitempty"`
	// AllowCredentials sends Access-Control-Allow-Credentials: true.
	AllowCredentials *bool `json:"allowCredentials,omitempty"`
	// UnmatchedPreflights is what becomes of a preflight whose origin is
	// not allowed: FORWARD (the default) sends it to the destination,
	// IGNORE answers it at the sidecar without CORS headers.
	UnmatchedPreflights string `json:"unmatchedPreflights,omitempty"`
}

// Istio's unmatchedPreflights values.
const (
	UnmatchedPreflightsForward = "FORWARD"
	UnmatchedPreflightsIgnore  = "IGNORE"
)

// corsMethods are the methods Istio accepts in allowMethods (Go's, as
// Istio's supportedCORSMethods), and "*".
var corsMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "CONNECT": true, "OPTIONS": true, "TRACE": true, "*": true}

// corsPolicy checks a route's corsPolicy by Istio's rules (each
// allowOrigins entry one non-empty exact, prefix or regex; methods Istio
// knows; header names or "*"; maxAge a duration of whole seconds), and
// refuses by name what Istio would accept and ignore: allowOrigin beside
// allowOrigins (Istio reads only the latter), and a corsPolicy on a route
// that answers with a redirect or a directResponse (Envoy's CORS filter
// is bypassed there).
func (v *validator) corsPolicy(p string, rt *HTTPRoute) {
	c := rt.CorsPolicy
	if c == nil {
		return
	}
	p += ".corsPolicy"
	switch {
	case rt.Redirect != nil:
		v.fail(p, "has no effect on a route that answers with a redirect (Envoy's CORS filter is bypassed there): remove it, or move it to the route the redirect leads to")
	case rt.DirectResponse != nil:
		v.fail(p, "has no effect on a route that answers with a directResponse (Envoy's CORS filter is bypassed there): remove it, or set the CORS headers in headers.response")
	}
	for i := range c.AllowOrigins {
		op := fmt.Sprintf("%s.allowOrigins[%d]", p, i)
		sm := &c.AllowOrigins[i]
		v.stringMatch(op, sm)
		for _, s := range []*string{sm.Exact, sm.Prefix, sm.Regex} {
			if s != nil && *s == "" {
				v.fail(op, "an empty match allows no origin: give the origin (e.g. exact: https://example.com), or regex: '.*' for every origin")
			}
		}
	}
	if len(c.AllowOrigins) > 0 && len(c.AllowOrigin) > 0 {
		v.fail(p+".allowOrigin", "is set beside allowOrigins: set only allowOrigins (allowOrigin is its deprecated form, which Istio ignores beside it)")
	}
	for i, m := range c.AllowMethods {
		if !corsMethods[m] {
			v.fail(fmt.Sprintf("%s.allowMethods[%d]", p, i), "%q is not a supported HTTP method: want GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT, OPTIONS, TRACE or \"*\"", m)
		}
	}
	for field, names := range map[string][]string{"allowHeaders": c.AllowHeaders, "exposeHeaders": c.ExposeHeaders} {
		for i, n := range names {
			if n != "*" && !httpguts.ValidHeaderFieldName(n) {
				v.fail(fmt.Sprintf("%s.%s[%d]", p, field, i), "%q is not a header name (or \"*\")", n)
			}
		}
	}
	if c.MaxAge != nil {
		v.duration(p+".maxAge", c.MaxAge)
		if c.MaxAge.Duration%time.Second != 0 {
			v.fail(p+".maxAge", "%s: maxAge is whole seconds (Access-Control-Max-Age)", c.MaxAge.Duration)
		}
	}
	switch c.UnmatchedPreflights {
	case "", "UNSPECIFIED", UnmatchedPreflightsForward, UnmatchedPreflightsIgnore:
	default:
		v.fail(p+".unmatchedPreflights", "%q: want FORWARD or IGNORE", c.UnmatchedPreflights)
	}
}

// CORS is a route's corsPolicy compiled: what the sidecar answers a
// preflight with and adds to the responses of an allowed origin.
type CORS struct {
	origins []*strMatch
	// AllowMethods, AllowHeaders and ExposeHeaders are the lists joined
	// by "," (as Istio hands them to Envoy); "" when empty.
	AllowMethods, AllowHeaders, ExposeHeaders string
	// MaxAge is Access-Control-Max-Age in seconds, "" when unset.
	MaxAge string
	// AllowCredentials sends Access-Control-Allow-Credentials: true.
	AllowCredentials bool
	// ForwardUnmatched sends a preflight whose origin is not allowed on to
	// the destination (FORWARD); false answers it at the sidecar (IGNORE).
	ForwardUnmatched bool
}

// compileCORS compiles a validated corsPolicy; nil for none.
func compileCORS(c *CorsPolicy) *CORS {
	if c == nil {
		return nil
	}
	out := &CORS{
		AllowMethods: strings.Join(c.AllowMethods, ","), AllowHeaders: strings.Join(c.AllowHeaders, ","), ExposeHeaders: strings.Join(c.ExposeHeaders, ","),
		AllowCredentials: c.AllowCredentials != nil && *c.AllowCredentials,
		ForwardUnmatched: c.UnmatchedPreflights != UnmatchedPreflightsIgnore,
	}
	if c.MaxAge != nil {
		out.MaxAge = strconv.FormatInt(int64(c.MaxAge.Duration/time.Second), 10)
	}
	for i := range c.AllowOrigins {
		out.origins = append(out.origins, compileStr(&c.AllowOrigins[i], false))
	}
	if len(c.AllowOrigins) == 0 {
		for _, o := range c.AllowOrigin {
			out.origins = append(out.origins, &strMatch{kind: 'e', value: o})
		}
	}
	return out
}

// OriginAllowed reports whether origin (an Origin header's value, not
// empty) is allowed: some allowOrigins entry matches it, or matches "*"
// (Envoy's rule: an entry that takes "*" allows every origin).
func (c *CORS) OriginAllowed(origin string) bool {
	for _, m := range c.origins {
		if m.ok("*", true) || m.ok(origin, true) {
			return true
		}
	}
	return false
}
