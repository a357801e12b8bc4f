// Package pathnorm normalizes the target of an HTTP request before a
// sidecar routes, authorizes and forwards it, so that the path a policy
// sees is the path the app receives (CVE-2021-31920 is the Istio bug of
// letting the two differ).
//
// The rules are Istio's (meshConfig pathNormalization, whose
// DECODE_AND_MERGE_SLASHES is the default here) on top of RFC 3986:
//
//   - percent-encoded unreserved characters (RFC 3986 §2.3: ALPHA, DIGIT,
//     "-", ".", "_", "~") are decoded, once: "%2561" stays "%2561";
//   - every other escape keeps its encoding with upper-case hex (§6.2.2.1);
//   - an escape of a control character (%00-%1F, %7F) and a malformed
//     escape are errors (the request is refused with 400);
//   - a literal backslash is a path separator, as in Envoy's normalize_path
//     and WHATWG URL parsing;
//   - "%2F" and "%5C" are kept, decoded into separators, or refused, as
//     EscapedSlashes says (Envoy's path_with_escaped_slashes_action);
//   - "." and ".." segments are resolved (§5.2.4), also when spelled with
//     escapes ("%2e%2E"); ".." never climbs above the root;
//   - repeated slashes are merged (Istio's MERGE_SLASHES);
//   - a segment that is empty, "." or ".." before a ";" parameter ("/..;/",
//     "/;x/") is an error: Tomcat and other servlet containers drop the
//     parameter and resolve the segment, where RFC 3986 does not;
//   - raw bytes outside RFC 3986's pchar set that are harmless to quote
//     (non-ASCII, '"', '<', '>', '`', '{', '}', '|', '^', '[', ']') are
//     percent-encoded; raw control characters, space and '#' are errors;
//   - a query of more than MaxQueryParams pairs is an error.
//
// Letter case is kept: paths are case-sensitive (§6.2.2.1), and a policy
// for an app that folds case must fold it too.
package pathnorm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// EscapedSlashes is what happens to "%2F" and "%5C" in a path, named after
// Envoy's path_with_escaped_slashes_action. The zero value is Decode.
type EscapedSlashes uint8

// The actions on escaped slashes.
const (
	// Decode turns "%2F" and "%5C" into path separators before dot
	// segments are resolved and slashes merged (Envoy's
	// UNESCAPE_AND_FORWARD, Istio's DECODE_AND_MERGE_SLASHES: the setting
	// Istio's security best practices recommend).
	Decode EscapedSlashes = iota
	// Keep leaves them encoded (upper-case hex), inside their segment
	// (Envoy's KEEP_UNCHANGED, Istio's MERGE_SLASHES). An app that decodes
	// them before routing then sees separators the policy did not.
	Keep
	// Reject refuses a path that has one (Envoy's REJECT_REQUEST).
	Reject
)

// ParseEscapedSlashes reads "keep", "decode" or "reject", or Envoy's
// KEEP_UNCHANGED, UNESCAPE_AND_FORWARD or REJECT_REQUEST.
func ParseEscapedSlashes(s string) (EscapedSlashes, error) {
	switch s {
	case "decode", "UNESCAPE_AND_FORWARD":
		return Decode, nil
	case "keep", "KEEP_UNCHANGED":
		return Keep, nil
	case "reject", "REJECT_REQUEST":
		return Reject, nil
	}
	return 0, fmt.Errorf("pathnorm: escaped slashes %q: want keep, decode or reject", s)
}

// String is the flag's spelling of e.
func (e EscapedSlashes) String() string {
	switch e {
	case Keep:
		return "keep"
	case Reject:
		return "reject"
	}
	return "decode"
}

// ErrInvalid is wrapped by every error of this package: the request target
// cannot be normalized and the request must be refused (400).
var ErrInvalid = errors.New("invalid request target")

func invalid(why string) error { return fmt.Errorf("pathnorm: %w: %s", ErrInvalid, why) }

// Options are the normalization settings of one sidecar.
type Options struct {
	EscapedSlashes EscapedSlashes
}

// Target is a normalized request target: Path (starting with "/", or "*"
// for an asterisk-form OPTIONS) and Query (the raw query without "?";
// empty when there is none).
type Target struct {
	Path, Query string
	// Changed is false when the target given was exactly Path, or
	// Path + "?" + Query: nothing needs rewriting.
	Changed bool
}

// URI is the target in origin-form, as it is forwarded.
func (t Target) URI() string {
	if t.Query == "" {
		return t.Path
	}
	return t.Path + "?" + t.Query
}

// Target normalizes a request target (RFC 9112 §3.2): origin-form, or
// absolute-form (whose scheme and authority are dropped; the caller keeps
// the Host), or "*" for OPTIONS. A fragment is an error: a client never
// sends one (RFC 9110 §7.1).
func (o Options) Target(method, target string) (Target, error) {
	if target == "*" {
		if method != "OPTIONS" {
			return Target{}, invalid("asterisk-form target for a method other than OPTIONS")
		}
		return Target{Path: "*"}, nil
	}
	abs := false
	if target == "" || target[0] != '/' {
		rest, ok := cutScheme(target)
		if !ok {
			return Target{}, invalid("target is neither a path starting with \"/\" nor an absolute http(s) URL")
		}
		i := strings.IndexAny(rest, "/?#")
		if i < 0 {
			rest = "/"
		} else if rest = rest[i:]; rest[0] != '/' {
			rest = "/" + rest
		}
		target, abs = rest, true
	}
	path, query, hasQuery := strings.Cut(target, "?")
	np, err := o.Path(path)
	if err != nil {
		return Target{}, err
	}
	nq, err := normalQuery(query)
	if err != nil {
		return Target{}, err
	}
	changed := abs || np != path || nq != query || hasQuery && query == ""
	return Target{Path: np, Query: nq, Changed: changed}, nil
}

// cutScheme strips "http://" or "https://" (any case).
func cutScheme(s string) (string, bool) {
	for _, scheme := range []string{"http://", "https://"} {
		if len(s) >= len(scheme) && strings.EqualFold(s[:len(scheme)], scheme) {
			return s[len(scheme):], true
		}
	}
	return "", false
}

// Path normalizes an absolute path (no query). A path already normal is
// returned as it is, without allocating.
func (o Options) Path(p string) (string, error) {
	if o.isNormal(p) {
		return p, nil
	}
	return o.normalize(p)
}

// byte classes of a path.
const (
	clsBad       = iota // control, space, '#', '?': an error
	clsPchar            // kept as is (RFC 3986 pchar without '%')
	clsQuote            // percent-encoded
	clsPercent          // '%'
	clsSeparator        // '/'
	clsBackslash        // '\': a separator
)

var class = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		switch {
		case c < 0x21 || c == 0x7f || c == '#' || c == '?':
			t[c] = clsBad
		case isUnreserved(byte(c)) || strings.IndexByte("!$&'()*+,;=:@", byte(c)) >= 0:
			t[c] = clsPchar
		case c == '%':
			t[c] = clsPercent
		case c == '/':
			t[c] = clsSeparator
		case c == '\\':
			t[c] = clsBackslash
		default:
			t[c] = clsQuote
		}
	}
	return t
}()

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

const upperHex = "0123456789ABCDEF"

// isNormal reports whether normalize would return p unchanged: the fast
// path of every request, one pass and no allocation.
func (o Options) isNormal(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	seg := 1 // start of the current segment
	for i := 1; i < len(p); i++ {
		switch class[p[i]] {
		case clsPchar:
		case clsSeparator:
			if !normalSegment(p[seg:i], false) {
				return false
			}
			seg = i + 1
		case clsPercent:
			if i+2 >= len(p) || !isUpperHex(p[i+1]) || !isUpperHex(p[i+2]) {
				return false
			}
			b, _ := unhex(p[i+1])
			l, _ := unhex(p[i+2])
			c := b<<4 | l
			if isUnreserved(c) || c < 0x20 || c == 0x7f || (c == '/' || c == '\\') && o.EscapedSlashes != Keep {
				return false
			}
			i += 2
		default:
			return false
		}
	}
	return normalSegment(p[seg:], true)
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

// normalSegment: a segment the normalizer keeps as it is; last is the
// final segment, which may be empty (a trailing slash).
func normalSegment(s string, last bool) bool {
	base, _, _ := strings.Cut(s, ";")
	switch {
	case s == "":
		return last
	case base == "" || base == "." || base == "..":
		return false
	}
	return true
}

// normalize is the slow path: it builds the normal form or says why there
// is none.
func (o Options) normalize(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", invalid("path does not start with \"/\"")
	}
	out := make([]byte, 1, len(p)+8)
	out[0] = '/'
	seg := 1
	// endSegment closes the segment out[seg:]; sep says a separator
	// follows it.
	endSegment := func(sep bool) error {
		s := string(out[seg:])
		base, _, params := strings.Cut(s, ";")
		switch {
		case params && (base == "" || base == "." || base == ".."):
			return invalid("path parameter on an empty or dot segment (servlet containers resolve \"/..;/\")")
		case s == ".":
			out = out[:seg]
		case s == "..":
			out = out[:seg]
			if seg > 1 {
				j := bytes.LastIndexByte(out[:seg-1], '/')
				out = out[:j+1]
			}
		case s == "":
			// A repeated slash: merged.
		case sep:
			out = append(out, '/')
		}
		seg = len(out)
		return nil
	}
	for i := 1; i < len(p); i++ {
		c := p[i]
		switch class[c] {
		case clsPchar:
			out = append(out, c)
		case clsQuote:
			out = append(out, '%', upperHex[c>>4], upperHex[c&15])
		case clsSeparator, clsBackslash:
			if err := endSegment(true); err != nil {
				return "", err
			}
		case clsPercent:
			if i+2 >= len(p) {
				return "", invalid("truncated percent-encoding")
			}
			hi, ok1 := unhex(p[i+1])
			lo, ok2 := unhex(p[i+2])
			if !ok1 || !ok2 {
				return "", invalid(fmt.Sprintf("malformed percent-encoding %q", p[i:i+3]))
			}
			i += 2
			d := hi<<4 | lo
			switch {
			case isUnreserved(d):
				out = append(out, d)
			case d < 0x20 || d == 0x7f:
				return "", invalid(fmt.Sprintf("encoded control character %%%02X", d))
			case d == '/' || d == '\\':
				switch o.EscapedSlashes {
				case Reject:
					return "", invalid(fmt.Sprintf("encoded slash %%%02X (--path-with-escaped-slashes reject)", d))
				case Decode:
					if err := endSegment(true); err != nil {
						return "", err
					}
					continue
				}
				out = append(out, '%', upperHex[hi], upperHex[lo])
			default:
				out = append(out, '%', upperHex[hi], upperHex[lo])
			}
		default:
			return "", invalid(fmt.Sprintf("character %q in path", c))
		}
	}
	if err := endSegment(false); err != nil {
		return "", err
	}
	return string(out), nil
}

// MaxQueryParams is the most "&"-separated pairs a query may have (empty
// ones count, as in net/url). Apps stop parsing past a limit of their own,
// and then decide on fewer parameters than the policy saw: Express's qs
// keeps the first 1,000 (its parameterLimit); Go's net/url (since 1.24)
// drops every one past 10,000; Tomcat stops at its maxParameterCount. So
// a longer query is refused (400), at the lowest of those limits.
const MaxQueryParams = 1000

// normalQuery checks a raw query: control characters, space and '#' are
// errors, as is a malformed escape (the policy's parsed query and the app
// could read it differently), and so is one of more than MaxQueryParams
// pairs; raw non-ASCII bytes are percent-encoded. Escapes are kept as they
// are: what they mean is the app's business.
func normalQuery(q string) (string, error) {
	quote, pairs := 0, 1
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '&':
			if pairs++; pairs > MaxQueryParams {
				return "", invalid(fmt.Sprintf("query of more than %d parameters (apps drop those past their limit)", MaxQueryParams))
			}
		case c < 0x21 || c == 0x7f || c == '#':
			return "", invalid(fmt.Sprintf("character %q in query", c))
		case c == '%':
			if i+2 >= len(q) {
				return "", invalid("truncated percent-encoding in query")
			}
			if _, ok := unhex(q[i+1]); !ok {
				return "", invalid(fmt.Sprintf("malformed percent-encoding %q in query", q[i:i+3]))
			}
			if _, ok := unhex(q[i+2]); !ok {
				return "", invalid(fmt.Sprintf("malformed percent-encoding %q in query", q[i:i+3]))
			}
			i += 2
		case c >= 0x80:
			quote++
		}
	}
	if quote == 0 {
		return q, nil
	}
	out := make([]byte, 0, len(q)+2*quote)
	for i := 0; i < len(q); i++ {
		if c := q[i]; c >= 0x80 {
			out = append(out, '%', upperHex[c>>4], upperHex[c&15])
		} else {
			out = append(out, c)
		}
	}
	return string(out), nil
}
