package hop

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// XFCC is the header in which the inbound sidecar tells the app who called
// (Envoy's X-Forwarded-Client-Cert); only the sidecar sets it.
const XFCC = "X-Forwarded-Client-Cert"

// protectedHeaders may never be named by a Connection header: the ones the
// sidecar sets or relies on (the caller's identity, trace context, request
// ID) and end-to-end ones that framing, routing and gRPC depend on. RFC
// 9110 §7.6.1 forbids naming a field "intended for all recipients"; Envoy
// refuses requests that name X-Forwarded-* (envoyproxy/envoy#8862); Traefik's
// CVE-2021-32813 was a Connection header removing X-Forwarded-Client-Cert-like
// headers the proxy had just set. Canonical names.
var protectedHeaders = map[string]bool{
	XFCC:                      true,
	"Traceparent":             true,
	"Tracestate":              true,
	"X-Request-Id":            true,
	"X-Forwarded-For":         true,
	"X-Forwarded-Host":        true,
	"X-Forwarded-Proto":       true,
	"Forwarded":               true,
	"Host":                    true,
	"Content-Length":          true,
	"Content-Type":            true, // picks gRPC or HTTP on both sides
	"Grpc-Timeout":            true,
	"Grpc-Status":             true,
	"Grpc-Message":            true,
	"Grpc-Status-Details-Bin": true,
}

// ErrConnectionOption is a request whose Connection header names a
// protected header.
var ErrConnectionOption = errors.New("hop: the Connection header may not name")

// TakeConnectionOptions removes the headers a request's Connection header
// names, as the first step, before the sidecar adds headers of its own
// (RFC 9110 §7.6.1), and leaves in Connection only the options later steps
// still act on: close and the standard hop-by-hop headers (Upgrade, Te...),
// which every forwarding path removes. A Connection header that names a
// protected header refuses the request.
func TakeConnectionOptions(h http.Header) error {
	conn := h["Connection"]
	if len(conn) == 0 {
		return nil
	}
	var keep []string
	for _, v := range conn {
		for opt := range strings.SplitSeq(v, ",") {
			opt = strings.TrimSpace(opt)
			if opt == "" {
				continue
			}
			name := http.CanonicalHeaderKey(opt)
			switch {
			case protectedHeaders[name]:
				return fmt.Errorf("%w %s", ErrConnectionOption, name)
			case name == "Connection":
			case name == "Close" || isHopHeader(name):
				keep = append(keep, name)
			default:
				delete(h, name)
			}
		}
	}
	if len(keep) == 0 {
		delete(h, "Connection")
	} else {
		h["Connection"] = []string{strings.Join(keep, ", ")}
	}
	return nil
}

func isHopHeader(name string) bool {
	for _, k := range hopHeaders {
		if k == name {
			return true
		}
	}
	return false
}

// DropForgedIdentity deletes every header a caller sent that an app could
// read as the sidecar's identity header: X-Forwarded-Client-Cert in any
// case, or with '_' for '-' (CGI, WSGI and nginx's underscores_in_headers
// map both to one name). Only the sidecar says who the caller is.
func DropForgedIdentity(h http.Header) {
	for k := range h {
		if len(k) == len(XFCC) && sameHeaderName(k, XFCC) {
			delete(h, k)
		}
	}
}

// DropForgedTrailerIdentity is DropForgedIdentity for the trailer fields
// of r, a request a server read and a proxy forwards as it is: from the
// names r declares now (Trailer, which a writer such as Request.Write
// declares again), and from what r.Trailer holds when r.Body reaches its
// end, where the server puts the fields that came (net/http and
// x/net/http2 put undeclared ones there too once any is declared). It
// wraps r.Body for the second; a request that declares no trailer is
// left as it is, since no server fills its Trailer.
func DropForgedTrailerIdentity(r *http.Request) {
	if r.Trailer == nil || r.Body == nil || r.Body == http.NoBody {
		return
	}
	DropForgedIdentity(r.Trailer)
	r.Body = &trailerGuard{ReadCloser: r.Body, trailer: r.Trailer}
}

// trailerGuard is a request body that drops the identity header from its
// request's trailer fields before it reports the body's end, which is
// when a transport writes them (after the body, RFC 9112 §7.1.2).
type trailerGuard struct {
	io.ReadCloser
	trailer http.Header
}

func (g *trailerGuard) Read(p []byte) (int, error) {
	n, err := g.ReadCloser.Read(p)
	if err == io.EOF {
		DropForgedIdentity(g.trailer)
	}
	return n, err
}

// sameHeaderName compares header names as apps may: case-insensitively and
// with '_' equal to '-'.
func sameHeaderName(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if foldHeaderByte(a[i]) != foldHeaderByte(b[i]) {
			return false
		}
	}
	return true
}

func foldHeaderByte(c byte) byte {
	switch {
	case c == '_':
		return '-'
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}

// IsWebSocketUpgrade reports whether a request asks to become a WebSocket,
// the one upgrade a sidecar tunnels (Istio enables only websocket). Any
// other Upgrade is a plain request whose hop-by-hop Upgrade goes: h2c in
// particular, since an app that took it would read HTTP/2 frames from the
// tunnel with no policy decision per request (h2c smuggling; Envoy strips
// h2c upgrades). The header must hold exactly one token, "websocket".
func IsWebSocketUpgrade(h http.Header) bool {
	v := h["Upgrade"]
	return len(v) == 1 && strings.EqualFold(strings.TrimSpace(v[0]), "websocket")
}

// hopHeaders are connection-scoped and never forwarded.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// RemoveHeaders drops connection-scoped headers: the standard ones and
// any the Connection header names, except protected ones (protectedHeaders).
func RemoveHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = http.CanonicalHeaderKey(strings.TrimSpace(name)); name != "" && !protectedHeaders[name] {
				delete(h, name)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k) // already canonical: Header.Del would canonicalise again (2% of CPU)
	}
}

// NoDefaultUserAgent keeps a request without a User-Agent without one:
// Go's transports send "Go-http-client/1.1" or "/2.0" unless the header is
// present and empty (httputil.ReverseProxy does the same), and the peer's
// policy and app would see a header the caller never sent.
func NoDefaultUserAgent(h http.Header) {
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""}
	}
}

// StripRequestHeaders removes a request's hop-by-hop headers but keeps
// "Te: trailers", which gRPC needs end to end.
func StripRequestHeaders(h http.Header) {
	te := strings.Contains(strings.ToLower(h.Get("Te")), "trailers")
	RemoveHeaders(h)
	if te {
		h["Te"] = []string{"trailers"}
	}
}
