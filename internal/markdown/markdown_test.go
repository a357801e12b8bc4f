package markdown

import "testing"

// A value from the network or a user stays inside its table cell and adds
// no markup.
func TestMarkdownCellEscaping(t *testing.T) {
	for _, tc := range []struct{ in, text, code string }{
		{"/v1/orders", "/v1/orders", "`/v1/orders`"},
		{"a|b", `a\|b`, "`a\\|b`"},
		{"line\nbreak", "line break", "`line break`"},
		{"<img src=x>", `\<img src=x\>`, "`<img src=x>`"},
		{"[x](http://e)", `\[x\](http://e)`, "`[x](http://e)`"},
		{"a`b", "a\\`b", "``a`b``"},
		{"`edge", "\\`edge", "`` `edge ``"},
		{"a&amp;", "a&amp;amp;", "`a&amp;`"},
		{"", "", ""},
	} {
		if got := Text(tc.in); got != tc.text {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.text)
		}
		if got := Code(tc.in); got != tc.code {
			t.Errorf("Code(%q) = %q, want %q", tc.in, got, tc.code)
		}
	}
}
