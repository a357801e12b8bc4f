// Package jsonenc helps encoders of fixed-shape values write exactly what
// encoding/json's Marshal writes, without reflection, on paths that
// encode one value per request (the audit record and the policy input).
// Anything it cannot write as Marshal would, it reports, and the caller
// falls back to Marshal.
package jsonenc

import (
	"slices"
	"unicode/utf8"
)

// AppendString appends s as a JSON string when Marshal writes it as it
// is between quotes (printable ASCII other than '"', '\\' and the HTML
// characters Marshal escapes); otherwise it returns b unchanged and false.
//
// On the hot path (every string of every decision recorded): one table
// load per byte instead of seven comparisons, measured faster
// (BenchmarkAppendString; figures in bench/README.md, "Figures once quoted
// in the code"); FuzzAppendString holds it to Marshal.
func AppendString(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if !plain[s[i]] {
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}

// plain marks the bytes Marshal writes as they are inside a string.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// AppendSortedKeys appends m's keys to dst in the order Marshal writes a
// map's. With a dst on the caller's stack a small map's keys cost no
// allocation (on the hot path: three maps of every decision recorded,
// BenchmarkAuditRecord 18 -> 14 allocs per decision).
func AppendSortedKeys[V any](dst []string, m map[string]V) []string {
	for k := range m {
		dst = append(dst, k)
	}
	slices.Sort(dst)
	return dst
}

// AppendStringMap appends m as a JSON object, keys sorted, exactly as
// Marshal writes a map[string]string, when AppendString can write every
// key and value; otherwise it returns b unchanged and false. A nil m is
// written as {} (callers that must write null check first). On the hot
// path: a decision's headers and labels.
func AppendStringMap(b []byte, m map[string]string) ([]byte, bool) {
	return AppendStringMapExcept(b, m, nil)
}

// AppendStringMapExcept is AppendStringMap of m without the keys in
// except, as if they were deleted from a copy of m: the audit record
// leaves the masked headers out this way, where copying the map cost a
// tenth of BenchmarkAuditRecord.
func AppendStringMapExcept(b []byte, m map[string]string, except []string) ([]byte, bool) {
	start := len(b)
	var keys [16]string // a small map's keys, off the heap
	b = append(b, '{')
	n := 0
	for _, k := range AppendSortedKeys(keys[:0], m) {
		if slices.Contains(except, k) {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		var ok bool
		if b, ok = AppendString(b, k); !ok {
			return b[:start], false
		}
		b = append(b, ':')
		if b, ok = AppendString(b, m[k]); !ok {
			return b[:start], false
		}
	}
	return append(b, '}'), true
}

// maxCompactDepth bounds IsCompact's nesting: deeper documents are left to
// encoding/json (the input document nests four levels).
const maxCompactDepth = 64

// IsCompact reports whether m is exactly one valid JSON value without
// insignificant whitespace, that is json.Valid(m) and json.Compact gives m
// back unchanged; when it reports false the caller uses json.Compact.
//
// On the hot path: a sidecar appends the input document of every decision
// it records, already compact (policy's appendInput writes it so), and
// json.Compact's byte-at-a-time state machine was a fifth of
// BenchmarkAuditRecord (figures in bench/README.md, "Figures once quoted
// in the code"); this check reads each byte once. FuzzIsCompact holds it to encoding/json.
func IsCompact(m []byte) bool {
	i, ok := compactValue(m, 0, 0, false)
	return ok && i == len(m)
}

// MarshalsAsIs reports whether json.Marshal writes m, a json.RawMessage,
// exactly as it is: m is compact (IsCompact) and holds none of what
// Marshal escapes in a raw message ('<', '>', '&', U+2028, U+2029: its
// HTML escaping). When it reports false the caller checks those and
// compacts m itself. On the hot path (the input document of every
// decision recorded) one pass replaces IsCompact and three searches for
// those characters, BenchmarkAuditRecord's largest step after the
// hash (figures in bench/README.md, "Cost of audit export");
// FuzzIsCompact holds it to Marshal.
func MarshalsAsIs(m []byte) bool {
	i, ok := compactValue(m, 0, 0, true)
	return ok && i == len(m)
}

// CompactPrefix returns the length of the one valid JSON value without
// insignificant whitespace at the start of m (what IsCompact reports of
// m[:n]), and false when m does not start with one. A reader of a line
// in a fixed shape finds the end of an embedded raw value with it, in
// the same pass that checks it.
func CompactPrefix(m []byte) (n int, ok bool) { return compactValue(m, 0, 0, false) }

// PlainPrefix returns the length of the longest prefix of m that
// AppendString writes as it is between quotes: a JSON string whose
// content is m[:n] decodes to m[:n] and encodes back to the same bytes.
func PlainPrefix(m []byte) int {
	for i, c := range m {
		if !plain[c] {
			return i
		}
	}
	return len(m)
}

// compactValue checks the value at m[i:] and returns the index after it;
// with asIs, also that its strings hold nothing Marshal's HTML escaping
// changes (MarshalsAsIs).
func compactValue(m []byte, i, depth int, asIs bool) (int, bool) {
	if i >= len(m) || depth > maxCompactDepth {
		return i, false
	}
	switch c := m[i]; {
	case c == '{':
		i++
		if i < len(m) && m[i] == '}' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = compactString(m, i, asIs); !ok || i >= len(m) || m[i] != ':' {
				return i, false
			}
			if i, ok = compactValue(m, i+1, depth+1, asIs); !ok || i >= len(m) {
				return i, false
			}
			switch m[i] {
			case ',':
				i++
			case '}':
				return i + 1, true
			default:
				return i, false
			}
		}
	case c == '[':
		i++
		if i < len(m) && m[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = compactValue(m, i, depth+1, asIs); !ok || i >= len(m) {
				return i, false
			}
			switch m[i] {
			case ',':
				i++
			case ']':
				return i + 1, true
			default:
				return i, false
			}
		}
	case c == '"':
		return compactString(m, i, asIs)
	case c == '-' || c >= '0' && c <= '9':
		return compactNumber(m, i)
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(m)-i >= len(lit) && string(m[i:i+len(lit)]) == lit {
				return i + len(lit), true
			}
		}
		return i, false
	}
}

// compactString checks the string at m[i:] (RFC 8259 section 7); with
// asIs, also that it holds none of '<', '>', '&', U+2028 and U+2029.
func compactString(m []byte, i int, asIs bool) (int, bool) {
	if i >= len(m) || m[i] != '"' {
		return i, false
	}
	for i++; i < len(m); i++ {
		// Most of a string is plain: one table load per byte (as
		// AppendString) before the cases below.
		for i < len(m) && plain[m[i]] {
			i++
		}
		if i >= len(m) {
			break
		}
		switch c := m[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case asIs && (c == '<' || c == '>' || c == '&'):
			return i, false
		case asIs && c == 0xe2 && len(m)-i > 2 && m[i+1] == 0x80 && (m[i+2] == 0xa8 || m[i+2] == 0xa9):
			return i, false // U+2028, U+2029 in UTF-8
		case c == '\\':
			i++
			if i >= len(m) {
				return i, false
			}
			switch m[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(m)-i <= 4 {
					return i, false
				}
				for _, h := range m[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return i, false
					}
				}
				i += 4
			default:
				return i, false
			}
		}
	}
	return i, false
}

// compactNumber checks the number at m[i:] (RFC 8259 section 6).
func compactNumber(m []byte, i int) (int, bool) {
	digits := func(i int) (int, bool) {
		start := i
		for i < len(m) && m[i] >= '0' && m[i] <= '9' {
			i++
		}
		return i, i > start
	}
	if m[i] == '-' {
		i++
	}
	if i < len(m) && m[i] == '0' {
		i++
	} else {
		var ok bool
		if i, ok = digits(i); !ok {
			return i, false
		}
	}
	if i < len(m) && m[i] == '.' {
		var ok bool
		if i, ok = digits(i + 1); !ok {
			return i, false
		}
	}
	if i < len(m) && (m[i] == 'e' || m[i] == 'E') {
		i++
		if i < len(m) && (m[i] == '+' || m[i] == '-') {
			i++
		}
		var ok bool
		if i, ok = digits(i); !ok {
			return i, false
		}
	}
	return i, true
}
