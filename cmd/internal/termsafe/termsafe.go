// Package termsafe keeps terminal control characters out of what Sigil's
// commands print. Names, labels, SPIFFE IDs, selectors and messages reach
// the operator's terminal from records anyone with apply rights, or any
// sidecar or agent, wrote. A control character in them could move the
// cursor, rewrite earlier lines or retitle the terminal (ESC ] 0 ; ...
// BEL), and a bidirectional override could make one name read as another.
// So nothing a command prints carries them: Field escapes them in one
// field of a table, and Writer escapes them in everything written to
// stdout and stderr. Escapes are Go's: \x1b, \n, \u202e, and \xff for a
// byte that is not UTF-8.
package termsafe

import (
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"
)

// escapeRune reports whether r must not reach a terminal as is: C0
// controls and DEL, C1 controls (U+0080 to U+009F, which some terminals
// read as ESC sequences), and the invisible bidirectional controls.
func escapeRune(r rune) bool {
	return r < 0x20 || r == 0x7f || (0x80 <= r && r <= 0x9f) || unicode.Is(unicode.Bidi_Control, r)
}

// appendEscaped appends r as Go would quote it inside a string.
func appendEscaped(b []byte, r rune) []byte {
	switch r {
	case '\n':
		return append(b, `\n`...)
	case '\r':
		return append(b, `\r`...)
	case '\t':
		return append(b, `\t`...)
	}
	if r < 0x80 {
		return fmt.Appendf(b, `\x%02x`, r)
	}
	return fmt.Appendf(b, `\u%04x`, r)
}

// Field returns s fit for one field of a table: every control character,
// newlines and tabs included, and every byte that is not UTF-8, escaped
// (\x1b, \n, \u202e, \xff).
func Field(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || escapeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = fmt.Appendf(b, `\x%02x`, s[i])
		case escapeRune(r):
			b = appendEscaped(b, r)
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return string(b)
}

// Fields is Field over each element.
func Fields(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = Field(s)
	}
	return out
}

// Writer passes text to the writer under it with every control
// character but newline and tab escaped, and every byte that is not UTF-8
// as \xNN. A rune split across two writes is held until it is whole;
// Flush writes what is held. Not safe for concurrent use.
type Writer struct {
	w       io.Writer
	pending []byte
}

// NewWriter returns a Writer over w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write implements io.Writer; n counts p's bytes as consumed even when
// some were escaped or are held.
func (t *Writer) Write(p []byte) (int, error) {
	data := append(t.pending, p...)
	t.pending = nil
	out := make([]byte, 0, len(data))
	i := 0
	for i < len(data) {
		c := data[i]
		if c >= 0x20 && c < 0x7f || c == '\n' || c == '\t' {
			out = append(out, c)
			i++
			continue
		}
		if c >= utf8.RuneSelf && !utf8.FullRune(data[i:]) {
			break // maybe the rest comes in the next write
		}
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = fmt.Appendf(out, `\x%02x`, c)
		case escapeRune(r):
			out = appendEscaped(out, r)
		default:
			out = append(out, data[i:i+size]...)
		}
		i += size
	}
	t.pending = append(t.pending, data[i:]...)
	if _, err := t.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes a held incomplete rune, escaped.
func (t *Writer) Flush() error {
	if len(t.pending) == 0 {
		return nil
	}
	var b strings.Builder
	for _, c := range t.pending {
		fmt.Fprintf(&b, `\x%02x`, c)
	}
	t.pending = nil
	_, err := io.WriteString(t.w, b.String())
	return err
}

// Command is the part of a cobra.Command that Main uses.
type Command interface {
	SetOut(io.Writer)
	SetErr(io.Writer)
	Execute() error
}

// Main runs a command-line program with its stdout and stderr through
// Writers, prints a failure as "name: error" on stderr, and returns the
// exit status (0 or 1) for os.Exit.
func Main(root Command, name string) int {
	stdout, stderr := NewWriter(os.Stdout), NewWriter(os.Stderr)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err != nil {
		fmt.Fprintln(stderr, name+":", err)
	}
	stdout.Flush()
	stderr.Flush()
	if err != nil {
		return 1
	}
	return 0
}
