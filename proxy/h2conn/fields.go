package h2conn

import (
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// commonHeaders are header names that most requests and responses
// between sidecars carry, in canonical form. Their wire (lower-case) and
// canonical forms are looked up rather than built, so that they cost no
// allocation per request either way (Go's HTTP/2 keeps such a table
// too).
var commonHeaders = [...]string{
	"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
	"Access-Control-Allow-Credentials", "Access-Control-Allow-Headers", "Access-Control-Allow-Methods",
	"Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Access-Control-Max-Age",
	"Access-Control-Request-Headers", "Access-Control-Request-Method", "Age", "Allow", "Authorization",
	"Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
	"Content-Location", "Content-Range", "Content-Type", "Cookie", "Date", "Etag", "Expect", "Expires",
	"From", "Grpc-Accept-Encoding", "Grpc-Encoding", "Grpc-Message", "Grpc-Status",
	"Grpc-Status-Details-Bin", "Grpc-Timeout", "Host", "If-Match", "If-Modified-Since", "If-None-Match",
	"If-Range", "If-Unmodified-Since", "Last-Modified", "Link", "Location", "Max-Forwards", "Origin",
	"Proxy-Authenticate", "Proxy-Authorization", "Range", "Referer", "Refresh", "Retry-After", "Server",
	"Set-Cookie", "Strict-Transport-Security", "Te", "Traceparent", "Tracestate", "Trailer",
	"Transfer-Encoding", "User-Agent", "Vary", "Via", "Www-Authenticate", "X-B3-Flags",
	"X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Spanid", "X-B3-Traceid", "X-Content-Type-Options",
	"X-Forwarded-Client-Cert", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
	"X-Request-Id",
}

// wireName and canonicalName map the common headers' canonical names to
// their wire names and back.
var wireName, canonicalName = func() (wire, canon map[string]string) {
	wire, canon = make(map[string]string, len(commonHeaders)), make(map[string]string, len(commonHeaders))
	for _, k := range commonHeaders {
		l := strings.ToLower(k)
		wire[k], canon[l] = l, k
	}
	return wire, canon
}()

// canonicalKey is the http.Header key of a header name received.
func canonicalKey(name string) string {
	if k, ok := canonicalName[name]; ok {
		return k
	}
	return http.CanonicalHeaderKey(name)
}

// statusCodes and statusLines are ":status" values and http.Response
// Status strings of the codes from 100 to 599, made once.
var statusCodes, statusLines = func() (codes, lines [600]string) {
	for c := 100; c < 600; c++ {
		codes[c] = strconv.Itoa(c)
		lines[c] = codes[c] + " " + http.StatusText(c)
	}
	return codes, lines
}()

// statusCode is code as a ":status" value.
func statusCode(code int) string {
	if code >= 100 && code < 600 {
		return statusCodes[code]
	}
	return strconv.Itoa(code)
}

// statusLine is code's http.Response Status ("200 OK").
func statusLine(code int) string {
	if code >= 100 && code < 600 {
		return statusLines[code]
	}
	return strconv.Itoa(code) + " " + http.StatusText(code)
}

// headerMap is an http.Header of fields (regular fields: no pseudo
// headers), keys canonical. One array backs the first value of every
// key, so the map costs two allocations however many fields it holds
// (net/textproto's reader does the same).
func headerMap(fields []hpack.HeaderField) http.Header {
	h := make(http.Header, len(fields))
	vals := make([]string, len(fields))
	for i, hf := range fields {
		addField(h, vals, i, canonicalKey(hf.Name), hf.Value)
	}
	return h
}

// addField adds v under k to h, taking vals[i] (an array as long as the
// fields) for the key's first value.
func addField(h http.Header, vals []string, i int, k, v string) {
	if vs, ok := h[k]; ok {
		// Capped at one element, a first value's slice is copied here,
		// never written over its neighbour.
		h[k] = append(vs, v)
		return
	}
	vals[i] = v
	h[k] = vals[i : i+1 : i+1]
}

// declaredTrailers is the trailer map of a message with header h: the
// keys its Trailer header names, with nil values; nil without any.
func declaredTrailers(h http.Header) http.Header {
	var t http.Header
	for _, v := range h["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
				if t == nil {
					t = http.Header{}
				}
				t[k] = nil
			}
		}
	}
	return t
}

// headerFields turns h into HPACK fields after pseudo, lower-casing names
// and leaving out what HTTP/2 forbids (RFC 9113, section 8.2.2).
func headerFields(pseudo []hpack.HeaderField, h http.Header) []hpack.HeaderField {
	fs := pseudo
	for k, vs := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		lk := lowerHeader(k)
		switch lk {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade", "host":
			continue
		case "te":
			for _, v := range vs {
				if v == "trailers" {
					fs = append(fs, hpack.HeaderField{Name: "te", Value: v})
				}
			}
			continue
		}
		for _, v := range vs {
			fs = append(fs, hpack.HeaderField{Name: lk, Value: v, Sensitive: lk == "authorization" || lk == "cookie" && len(v) < 20})
		}
	}
	return fs
}

// lowerHeader lower-cases a header name, without allocating when it
// already is or is a common one.
func lowerHeader(k string) string {
	if l, ok := wireName[k]; ok {
		return l
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; 'A' <= c && c <= 'Z' {
			b := []byte(k)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return k
}
