// Package markdown escapes text for GitHub-flavoured Markdown tables,
// for the reports Sigil's commands write as pull-request comments (`sigil
// policy diff --format markdown`, `sigil apply --dry-run --review`): a
// value recorded from the network or written by a user (a path, a header
// name) cannot end a cell, add a row, or inject links or HTML.
package markdown

import "strings"

// Text escapes s for a Markdown table cell: no line break, no pipe,
// no HTML, no emphasis or link markup.
func Text(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch c {
		case '\n', '\r', '\t':
			b.WriteByte(' ')
		case '|', '\\', '`', '*', '_', '[', ']', '<', '>', '#', '~', '!':
			b.WriteByte('\\')
			b.WriteRune(c)
		case '&':
			b.WriteString("&amp;")
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// Code writes s as a code span, safe in a table cell: GitHub ends a
// cell at "|" even inside code, so pipes are escaped there too, and a
// backtick inside gets a longer fence.
func Code(s string) string {
	if s == "" {
		return ""
	}
	s = strings.NewReplacer("\n", " ", "\r", " ", "|", `\|`).Replace(s)
	fence := "`"
	for strings.Contains(s, fence) {
		fence += "`"
	}
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		return fence + " " + s + " " + fence
	}
	return fence + s + fence
}
