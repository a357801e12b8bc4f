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
func AppendString(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}

// SortedKeys returns m's keys in the order Marshal writes a map's.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
