// Package ascii compares protocol text the way the protocols define it:
// ASCII letters without case, every other byte exactly.
package ascii

// EqualFold reports whether a and b are equal with ASCII letters compared
// without case and every other byte exactly, as HTTP field names, tokens
// and Envoy's case-insensitive matches are (RFC 9110 §5.1, §5.6.2).
// Unlike strings.EqualFold it never folds non-ASCII: "chun\u212Aed"
// (KELVIN SIGN) is not "chunked", as it is not to net/http, so a value
// read here frames a message as every HTTP/1.1 peer reads it; and strings
// of different byte lengths are never equal, so a matched prefix is always
// as many bytes as the pattern.
func EqualFold[T string | []byte](a T, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
