package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fixedNow() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }

func TestAppendVerifyAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(Event{Type: TokenCreated, Actor: "admin"}, Event{Type: TokenUsed, Subject: "spiffe://td/x"}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// Reopen continues the chain.
	l, err = Open(path, fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(Event{Type: EntryCreated}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	last, err := Verify(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if last.Seq != 3 || last.Type != EntryCreated {
		t.Fatalf("last = %+v", last)
	}

	lines := strings.SplitAfter(string(data), "\n")
	tampered := strings.Replace(string(data), "spiffe://td/x", "spiffe://td/y", 1)
	dropped := lines[0] + lines[2]
	for name, text := range map[string]string{"edited": tampered, "dropped": dropped} {
		if _, err := Verify(strings.NewReader(text)); !errors.Is(err, ErrBroken) {
			t.Errorf("%s: Verify = %v, want ErrBroken", name, err)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "x"), fixedNow); err != nil {
		t.Fatal(err)
	}
}

// TestAuditTamperAnyByte: a line is whole only when it is byte for byte
// the record the server wrote. Bytes added around or inside it (a second,
// forged JSON object after the first, which jq and log shippers read as
// an event of its own; spaces; a CR; an escape spelling the same text)
// break the chain, even where they decode to the same event.
func TestAuditTamperAnyByte(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(Event{Type: TokenCreated, Actor: "admin"}, Event{Type: EntryCreated, Actor: "admin"}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	data, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(data), "\n")
	first := strings.TrimSuffix(lines[0], "\n")
	for _, tt := range []struct{ name, line string }{
		{"second object", first + ` {"seq":2,"type":"agent.evicted","actor":"forged"}`},
		{"trailing bytes", first + "x"},
		{"trailing space", first + " "},
		{"leading space", " " + first},
		{"CR", first + "\r"},
		{"space inside", strings.Replace(first, `{"seq"`, `{ "seq"`, 1)},
		{"escaped letter", strings.Replace(first, `"admin"`, `"\u0061dmin"`, 1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			text := tt.line + "\n" + lines[1]
			if _, err := Verify(strings.NewReader(text)); !errors.Is(err, ErrBroken) {
				t.Errorf("Verify = %v, want ErrBroken", err)
			}
		})
	}
}
