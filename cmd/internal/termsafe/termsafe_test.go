package termsafe

import (
	"bytes"
	"testing"
)

// TestResourceNameValidationTerminalEscapes: whatever a stored record
// holds, what reaches the terminal has no control character.
func TestResourceNameValidationTerminalEscapes(t *testing.T) {
	tests := []struct{ in, field, writer string }{
		{"api", "api", "api"},
		{"héllo ✓", "héllo ✓", "héllo ✓"},
		{"\x1b]0;pwned\x07", `\x1b]0;pwned\x07`, `\x1b]0;pwned\x07`},
		{"a\nb\tc\rd", `a\nb\tc\rd`, "a\nb\tc\\rd"},
		{"a\u009b31mb", `a\u009b31mb`, `a\u009b31mb`},
		{"evil\u202egnp.exe", `evil\u202egnp.exe`, `evil\u202egnp.exe`},
		{"del\x7f", `del\x7f`, `del\x7f`},
		{"bad\xffbyte", `bad\xffbyte`, `bad\xffbyte`},
	}
	for _, tt := range tests {
		if got := Field(tt.in); got != tt.field {
			t.Errorf("Field(%q) = %q, want %q", tt.in, got, tt.field)
		}
		var b bytes.Buffer
		w := NewWriter(&b)
		// One byte at a time: a rune split across writes is held, not
		// escaped as if it were bad.
		for i := range len(tt.in) {
			if n, err := w.Write([]byte{tt.in[i]}); n != 1 || err != nil {
				t.Fatalf("Write: %d, %v", n, err)
			}
		}
		w.Flush()
		if b.String() != tt.writer {
			t.Errorf("Writer(%q) wrote %q, want %q", tt.in, b.String(), tt.writer)
		}
	}
}

func TestResourceNameValidationWriterFlushesAHeldPrefix(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	w.Write([]byte("ok \xe2\x9c"))
	if b.String() != "ok " {
		t.Fatalf("wrote %q before the rune was whole", b.String())
	}
	w.Flush()
	if b.String() != `ok \xe2\x9c` {
		t.Fatalf("flushed %q", b.String())
	}
}

func FuzzWriter(f *testing.F) {
	for _, s := range []string{"api", "\x1b[2J", "a\u009bb", "\xe2\x9c\x93", "\xff\xfe", "x\u202ey"} {
		f.Add([]byte(s), 1)
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk int) {
		if chunk < 1 {
			chunk = 1
		}
		var b bytes.Buffer
		w := NewWriter(&b)
		for len(in) > 0 {
			n := min(chunk, len(in))
			w.Write(in[:n])
			in = in[n:]
		}
		w.Flush()
		for _, r := range b.String() {
			if r != '\n' && r != '\t' && escapeRune(r) {
				t.Fatalf("control %U reached the output %q", r, b.String())
			}
		}
		if s := Field(b.String()); s != Field(s) {
			t.Fatalf("Field is not idempotent on %q", s)
		}
	})
}
