package traffic

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// Values of HTTPRedirect.derivePort (Istio's RedirectPortSelection).
const (
	DerivePortFromProtocolDefault = "FROM_PROTOCOL_DEFAULT"
	DerivePortFromRequestPort     = "FROM_REQUEST_PORT"
)

// RewritePath returns the path to forward for a request whose path is
// path, under the route's rewrite.uri (Envoy's prefix_rewrite, which is
// what Istio configures): when the route matched by URI prefix, the
// matched part is replaced and the rest of the path is kept byte for
// byte; otherwise the whole path is replaced. Only the join is touched:
// when rewrite.uri ends in "/" and the rest starts with one, one of the
// two goes, so "/v1/" → "/" turns "/v1/users" into "/users", not
// "//users". Without rewrite.uri the path is returned unchanged.
//
// Under rewrite.uriRegexRewrite every match of its regex in path is
// replaced, as Envoy's regex_rewrite does.
func (m Matched) RewritePath(path string) string {
	if m.Route != nil && m.rewriteRE != nil {
		return m.rewriteRE.ReplaceAllString(path, m.rewriteTo)
	}
	if m.Route == nil || m.Rewrite == nil || m.Rewrite.URI == "" {
		return path
	}
	uri := m.Rewrite.URI
	if !strings.HasPrefix(uri, "/") {
		// Istio accepts a rewrite.uri without the leading "/"; a request
		// path has one (RFC 9112 origin-form), so the sidecar adds it.
		uri = "/" + uri
	}
	if m.PrefixMatched == "" || !strings.HasPrefix(path, m.PrefixMatched) {
		return uri
	}
	rest := path[len(m.PrefixMatched):]
	if strings.HasSuffix(uri, "/") && strings.HasPrefix(rest, "/") {
		rest = rest[1:]
	}
	return uri + rest
}

// RedirectPrefixMarker starts a redirect.uri that replaces only the
// path prefix the route matched, keeping the rest, as rewrite.uri does
// (Istio's own spelling, which its Gateway API translation writes for
// ReplacePrefixMatch; Envoy's RedirectAction.prefix_rewrite). Without a
// prefix match it replaces the whole path.
const RedirectPrefixMarker = "%PREFIX()%"

// RedirectLocation returns the Location and status of the route's
// redirect for r, following Istio's HTTPRedirect (and the Envoy
// RedirectAction it becomes):
//   - uri replaces the whole path (or, after RedirectPrefixMarker, the
//     prefix matched); the request's query is kept (Envoy
//     keeps it unless strip_query, which Istio never sets), unless uri
//     carries a query of its own, which then replaces it;
//   - authority replaces the host and port;
//   - scheme replaces the scheme; a port that was the old scheme's
//     default is dropped with it;
//   - port sets the port; derivePort FROM_REQUEST_PORT keeps the port the
//     request was sent to, FROM_PROTOCOL_DEFAULT leaves it to the scheme;
//   - redirectCode is the status, 301 when unset.
//
// A port equal to the final scheme's default is left out (RFC 3986
// section 6.2.3). ok is false when the route does not redirect.
func (m Matched) RedirectLocation(r *http.Request) (location string, code int, ok bool) {
	if m.Route == nil || m.Redirect == nil {
		return "", 0, false
	}
	rd := m.Redirect
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	authority := r.Host
	if rd.Authority != "" {
		authority = rd.Authority
	}
	host, port := splitAuthority(authority)
	_, requestPort := splitAuthority(r.Host)
	if requestPort == "" {
		requestPort = defaultPort(scheme)
	}
	oldScheme := scheme
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	switch {
	case rd.Port != 0:
		port = strconv.FormatUint(uint64(rd.Port), 10)
	case rd.DerivePort == DerivePortFromRequestPort:
		port = requestPort
	case rd.DerivePort == DerivePortFromProtocolDefault:
		port = ""
	case scheme != oldScheme && port == defaultPort(oldScheme):
		port = ""
	}
	if port == defaultPort(scheme) {
		port = ""
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]" // an IPv6 literal
	}
	path, query := r.URL.EscapedPath(), r.URL.RawQuery
	if uri, prefixOnly := strings.CutPrefix(rd.URI, RedirectPrefixMarker); prefixOnly {
		path = Matched{Route: &Route{Rewrite: &HTTPRewrite{URI: uri}}, PrefixMatched: m.PrefixMatched}.RewritePath(path)
	} else if rd.URI != "" {
		path = rd.URI
		if p, q, hasQuery := strings.Cut(rd.URI, "?"); hasQuery {
			path, query = p, q
		}
	}
	location = scheme + "://" + host + path
	if query != "" {
		location += "?" + query
	}
	code = int(rd.RedirectCode)
	if code == 0 {
		code = http.StatusMovedPermanently
	}
	return location, code, true
}

// splitAuthority splits host[:port]; an IPv6 literal loses its brackets.
func splitAuthority(a string) (host, port string) {
	if h, p, err := net.SplitHostPort(a); err == nil {
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(a, "["), "]"), ""
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// expandTemplate turns an Envoy substitution (\1 to \9 for groups, \\ for
// a backslash) into a Go regexp template (${1}, with $ doubled), and
// reports the highest group it names.
func expandTemplate(sub string) (tmpl string, maxGroup int, err error) {
	var b strings.Builder
	for i := 0; i < len(sub); i++ {
		c := sub[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c != '\\':
			b.WriteByte(c)
		case i+1 < len(sub) && sub[i+1] >= '0' && sub[i+1] <= '9':
			n := int(sub[i+1] - '0')
			maxGroup = max(maxGroup, n)
			fmt.Fprintf(&b, "${%d}", n)
			i++
		case i+1 < len(sub) && sub[i+1] == '\\':
			b.WriteByte('\\')
			i++
		default:
			return "", 0, fmt.Errorf("traffic: %q: a backslash must be followed by a group number or another backslash", sub)
		}
	}
	return b.String(), maxGroup, nil
}
