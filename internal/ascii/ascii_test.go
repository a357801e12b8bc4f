package ascii

import "testing"

func TestEqualFold(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"Content-Length", "content-length", true},
		{"CHUNKED", "chunked", true},
		{"chunked", "chunked", true},
		{"chun\u212Aed", "chunked", false}, // KELVIN SIGN: strings.EqualFold says true
		{"chunke", "chunked", false},
		{"a-b", "a_b", false},
		{"", "", true},
		{"[", "{", false}, // 0x5b and 0x7b differ by 0x20 but are not letters
	} {
		if got := EqualFold(tc.a, tc.b); got != tc.want {
			t.Errorf("EqualFold(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := EqualFold([]byte(tc.a), tc.b); got != tc.want {
			t.Errorf("EqualFold([]byte(%q), %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
